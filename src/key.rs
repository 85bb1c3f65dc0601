//! Parsing and encoding a key: what the bytes of a key file mean.
//!
//! The format is detected from the content, never from the file name, so that every key
//! a user already has keeps its identity:
//!
//! | content                                  | format            |
//! |------------------------------------------|-------------------|
//! | exactly 32 bytes                         | raw secret key    |
//! | `-----BEGIN PRIVATE KEY-----` ...        | PKCS#8 PEM        |
//! | 64 hex or 52 base32 characters           | text              |
//! | DER starting with a SEQUENCE (`0x30`)    | PKCS#8 DER        |
//!
//! New keys are written as PKCS#8 v2 PEM, which carries the public key beside the secret
//! one: a damaged file is then detected instead of silently becoming another identity.

use std::fmt;

use data_encoding::{BASE32_NOPAD_NOCASE, Encoding, HEXLOWER_PERMISSIVE};
use ed25519_dalek::{
    SigningKey,
    ed25519::pkcs8::{
        ALGORITHM_OID, EncodePrivateKey, KeypairBytes, ObjectIdentifier, PrivateKeyInfoRef,
        SecretDocument, spki::der::pem,
    },
};
use iroh::SecretKey;
use zeroize::Zeroizing;

use crate::KeyProblem;

/// The on-disk or textual format a key was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Pkcs8Pem,
    Pkcs8Der,
    Raw,
    Hex,
    Base32,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pkcs8Pem => "PKCS#8 PEM",
            Self::Pkcs8Der => "PKCS#8 DER",
            Self::Raw => "raw 32 bytes",
            Self::Hex => "hex",
            Self::Base32 => "base32",
        })
    }
}

/// Reads a key from the content of a key file, in whichever format it is.
pub(crate) fn decode(bytes: &[u8]) -> Result<(SecretKey, Format), KeyProblem> {
    if bytes.len() == 32 {
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(bytes);
        return Ok((SecretKey::from_bytes(&raw), Format::Raw));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyProblem::Empty);
        }
        if text.starts_with("-----BEGIN ") {
            return decode_pem(text).map(|key| (key, Format::Pkcs8Pem));
        }
        if let Some(decoded) = decode_hex_or_base32(text) {
            return decoded;
        }
    }
    if bytes.first() == Some(&0x30) {
        return decode_pkcs8_der(bytes, "PKCS#8 DER").map(|key| (key, Format::Pkcs8Der));
    }
    Err(KeyProblem::UnknownFormat { len: bytes.len() })
}

/// Reads a key given as text: 64 hex or 52 base32 characters, either case, with white
/// space around it (the `IROH_SECRET` convention).
pub(crate) fn decode_text(text: &str) -> Result<(SecretKey, Format), KeyProblem> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyProblem::Empty);
    }
    decode_hex_or_base32(text).unwrap_or(Err(KeyProblem::NotHexOrBase32 {
        len: text.chars().count(),
    }))
}

/// Encodes a key as PKCS#8 v2 PEM (`BEGIN PRIVATE KEY`, public key included).
pub(crate) fn encode_pkcs8_pem(key: &SecretKey) -> Zeroizing<String> {
    let signing_key = SigningKey::from_bytes(&Zeroizing::new(key.to_bytes()));
    signing_key
        .to_pkcs8_pem(pem::LineEnding::LF)
        .expect("a 32-byte Ed25519 key always encodes as PKCS#8")
}

/// Decodes hex or base32 text, or returns `None` when it has the length of neither.
fn decode_hex_or_base32(text: &str) -> Option<Result<(SecretKey, Format), KeyProblem>> {
    let (encoding, format, name): (&Encoding, _, _) = match text.len() {
        64 => (&HEXLOWER_PERMISSIVE, Format::Hex, "hex"),
        52 => (&BASE32_NOPAD_NOCASE, Format::Base32, "base32"),
        _ => return None,
    };
    let mut bytes = Zeroizing::new([0u8; 32]);
    let decoded = match encoding.decode_len(text.len()) {
        Ok(32) => encoding.decode_mut(text.as_bytes(), &mut bytes[..]).is_ok(),
        _ => false,
    };
    Some(if decoded {
        Ok((SecretKey::from_bytes(&bytes), format))
    } else {
        Err(KeyProblem::InvalidText { encoding: name })
    })
}

fn decode_pem(text: &str) -> Result<SecretKey, KeyProblem> {
    const DAMAGED: KeyProblem = KeyProblem::Damaged {
        format: "PKCS#8 PEM",
    };
    match pem::decode_label(text.as_bytes()).map_err(|_| DAMAGED)? {
        "PRIVATE KEY" => {
            let (_, document) = SecretDocument::from_pem(text).map_err(|_| DAMAGED)?;
            decode_pkcs8_der(document.as_bytes(), "PKCS#8 PEM")
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyProblem::Encrypted),
        "OPENSSH PRIVATE KEY" => Err(KeyProblem::OpenSsh),
        label => Err(KeyProblem::OtherPem {
            label: label.to_owned(),
        }),
    }
}

fn decode_pkcs8_der(der: &[u8], format: &'static str) -> Result<SecretKey, KeyProblem> {
    let damaged = KeyProblem::Damaged { format };
    let info = PrivateKeyInfoRef::try_from(der).map_err(|_| damaged.clone())?;
    if info.algorithm.oid != ALGORITHM_OID {
        return Err(KeyProblem::OtherAlgorithm {
            algorithm: algorithm_name(info.algorithm.oid),
        });
    }
    let pair = KeypairBytes::try_from(info).map_err(|_| damaged)?;
    let key = SecretKey::from_bytes(&pair.secret_key);
    match &pair.public_key {
        Some(public) if public.as_ref() != key.public().as_bytes() => {
            Err(KeyProblem::PublicKeyMismatch)
        }
        _ => Ok(key),
    }
}

/// Names the algorithms whose keys people most often mistake for an iroh key.
fn algorithm_name(oid: ObjectIdentifier) -> String {
    let oid = oid.to_string();
    match oid.as_str() {
        "1.2.840.113549.1.1.1" => "RSA".to_owned(),
        "1.2.840.10045.2.1" => "elliptic-curve (ECDSA)".to_owned(),
        "1.3.101.110" => "X25519".to_owned(),
        "1.3.101.111" => "X448".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        _ => format!("OID {oid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_case_insensitive() {
        let key = SecretKey::from_bytes(&[7; 32]);
        let hex = data_encoding::HEXUPPER.encode(&key.to_bytes());
        let (decoded, format) = decode_text(&format!("  {hex}\n")).expect("decodes");
        assert_eq!((decoded.to_bytes(), format), (key.to_bytes(), Format::Hex));
        assert_eq!(decode_text(" \n").map(drop_key), Err(KeyProblem::Empty));
        assert_eq!(
            decode_text("abc").map(drop_key),
            Err(KeyProblem::NotHexOrBase32 { len: 3 })
        );
        assert_eq!(
            decode_text(&"g".repeat(64)).map(drop_key),
            Err(KeyProblem::InvalidText { encoding: "hex" })
        );
    }

    /// `SecretKey` is not `PartialEq`; compare results without it.
    fn drop_key(_: (SecretKey, Format)) {}
}
