//! Parsing and encoding a key: what the bytes of a key file mean.
//!
//! The format is detected from the content, never from the file name, so that every key
//! a user already has keeps its identity:
//!
//! | content                                  | format            |
//! |------------------------------------------|-------------------|
//! | exactly 32 bytes                         | raw secret key    |
//! | `-----BEGIN PRIVATE KEY-----` ...        | PKCS#8 PEM        |
//! | `-----BEGIN OPENSSH PRIVATE KEY-----` ... | OpenSSH           |
//! | 64 hex or 52 base32 characters, wrapped  | text              |
//! | DER starting with a SEQUENCE (`0x30`)    | PKCS#8 DER        |
//!
//! New keys are written as PKCS#8 v2 PEM, which carries the public key beside the secret
//! one: a damaged file is then detected instead of silently becoming another identity.

use std::fmt;

use data_encoding::{BASE32_NOPAD, BASE32_NOPAD_NOCASE, Encoding, HEXLOWER_PERMISSIVE};
use ed25519_dalek::{
    SigningKey,
    ed25519::pkcs8::{
        ALGORITHM_OID, EncodePrivateKey, KeypairBytes, ObjectIdentifier, PrivateKeyInfoRef,
        SecretDocument, spki::der::pem,
    },
};
use iroh::SecretKey;
use zeroize::{Zeroize, Zeroizing};

use crate::KeyProblem;

mod openssh;

/// A format an Ed25519 secret key is written in.
///
/// [`decode_key`] tells which one it read; [`encode_key`] writes any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyFormat {
    /// PKCS#8 v2 in PEM (`-----BEGIN PRIVATE KEY-----`) with the public key inside: what
    /// this crate creates. OpenSSL reads it from version 3.5 on.
    Pkcs8Pem,
    /// PKCS#8 v1 in PEM, the secret key alone: what `openssl genpkey` writes and every
    /// OpenSSL version reads.
    Pkcs8PemV1,
    /// PKCS#8 in binary DER. Written as version 2, with the public key inside.
    Pkcs8Der,
    /// The 32 secret bytes alone, as iroh's documentation writes them.
    Raw,
    /// 64 hex characters (the `IROH_SECRET` convention). Written lower case.
    Hex,
    /// 52 base32 characters without padding. Written lower case.
    Base32,
    /// An OpenSSH private key (`-----BEGIN OPENSSH PRIVATE KEY-----`), unencrypted: what
    /// `ssh-keygen -t ed25519 -N ""` writes.
    OpenSsh,
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pkcs8Pem => "PKCS#8 v2 PEM",
            Self::Pkcs8PemV1 => "PKCS#8 v1 PEM",
            Self::Pkcs8Der => "PKCS#8 DER",
            Self::Raw => "raw 32 bytes",
            Self::Hex => "hex",
            Self::Base32 => "base32",
            Self::OpenSsh => "OpenSSH",
        })
    }
}

/// Reads a secret key from the content of a key file, in whichever format it is.
///
/// The format is told by the content, never by a name: exactly 32 bytes are a raw key;
/// text starting with `-----BEGIN ` is PEM (PKCS#8 or OpenSSH); 64 hex or 52 base32
/// characters (either case, white space around or inside them ignored) are text; a DER
/// `SEQUENCE` is PKCS#8 DER. This is the parser [`load_or_generate`] uses, for keys that
/// come from somewhere other than a file (a secret manager, say).
///
/// ```
/// use iroh_identity::{KeyFormat, decode_key};
///
/// let hex = "2a".repeat(32);
/// let (key, format) = decode_key(hex.as_bytes())?;
/// assert_eq!(format, KeyFormat::Hex);
/// assert_eq!(key.to_bytes(), [0x2a; 32]);
/// # Ok::<(), iroh_identity::KeyProblem>(())
/// ```
///
/// # Errors
///
/// A [`KeyProblem`] saying why the bytes are not an Ed25519 secret key: empty, of an
/// unknown format, a public key, damaged, encrypted, of another algorithm, or PKCS#8
/// whose public key does not match its secret key.
///
/// # Security
///
/// The error holds no key material: of the input, at most a PEM label. The key's bytes
/// pass through buffers that are zeroed when dropped; the input is the caller's to zero.
///
/// [`load_or_generate`]: crate::load_or_generate
pub fn decode_key(bytes: &[u8]) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    if bytes.len() == 32 {
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(bytes);
        return Ok((SecretKey::from_bytes(&raw), KeyFormat::Raw));
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyProblem::Empty);
        }
        if text.starts_with("-----BEGIN ") {
            return decode_pem(text);
        }
        if let Some(decoded) = decode_hex_or_base32(text) {
            return decoded;
        }
        if is_openssh_public_key(text) {
            return Err(KeyProblem::PublicKey);
        }
    }
    if bytes.first() == Some(&0x30) {
        return decode_pkcs8_der(bytes, "PKCS#8 DER").map(|(key, _)| (key, KeyFormat::Pkcs8Der));
    }
    Err(KeyProblem::UnknownFormat { len: bytes.len() })
}

/// Writes a secret key in `format`: the exact bytes of a key file.
///
/// Text formats (PEM, hex, base32) end with a newline. [`decode_key`] reads every
/// format back to the same key.
///
/// ```
/// use iroh_identity::{KeyFormat, decode_key, encode_key};
///
/// let key = iroh::SecretKey::generate();
/// let pem = encode_key(&key, KeyFormat::Pkcs8Pem);
/// assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----\n"));
/// assert_eq!(decode_key(&pem)?.0.public(), key.public());
/// # Ok::<(), iroh_identity::KeyProblem>(())
/// ```
///
/// # Security
///
/// The result is secret: it is zeroed when dropped. Keep it out of logs and store it
/// only in a file that others cannot read.
pub fn encode_key(key: &SecretKey, format: KeyFormat) -> Zeroizing<Vec<u8>> {
    let secret = Zeroizing::new(key.to_bytes());
    let text = |encoding: &Encoding| {
        let mut text = Zeroizing::new(Vec::with_capacity(encoding.encode_len(32) + 1));
        text.resize(encoding.encode_len(32), 0);
        encoding.encode_mut(&secret[..], &mut text);
        text.make_ascii_lowercase();
        text.push(b'\n');
        text
    };
    match format {
        KeyFormat::Raw => Zeroizing::new(secret.to_vec()),
        KeyFormat::Hex => text(&HEXLOWER_PERMISSIVE),
        KeyFormat::Base32 => text(&BASE32_NOPAD),
        KeyFormat::Pkcs8Pem => {
            let pem = SigningKey::from_bytes(&secret)
                .to_pkcs8_pem(pem::LineEnding::LF)
                .expect("a 32-byte Ed25519 key always encodes as PKCS#8");
            Zeroizing::new(pem.as_bytes().to_vec())
        }
        KeyFormat::Pkcs8PemV1 => {
            let mut pair = KeypairBytes {
                secret_key: *secret,
                public_key: None,
            };
            let pem = pair
                .to_pkcs8_pem(pem::LineEnding::LF)
                .expect("a 32-byte Ed25519 key always encodes as PKCS#8");
            // `KeypairBytes` zeroes itself only with ed25519's `zeroize` feature, which
            // would rebuild iroh's tree for our users; zero it here instead.
            pair.secret_key.zeroize();
            Zeroizing::new(pem.as_bytes().to_vec())
        }
        KeyFormat::OpenSsh => openssh::encode(key),
        KeyFormat::Pkcs8Der => {
            let der = SigningKey::from_bytes(&secret)
                .to_pkcs8_der()
                .expect("a 32-byte Ed25519 key always encodes as PKCS#8");
            Zeroizing::new(der.as_bytes().to_vec())
        }
    }
}

/// Reads a key given as text: 64 hex or 52 base32 characters, either case, with white
/// space around or inside it (the `IROH_SECRET` convention).
pub(crate) fn decode_text(text: &str) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    let text = text.trim();
    if text.is_empty() {
        return Err(KeyProblem::Empty);
    }
    decode_hex_or_base32(text).unwrap_or(Err(KeyProblem::NotHexOrBase32 {
        len: text.chars().filter(|c| !c.is_whitespace()).count(),
    }))
}

/// Decodes hex or base32 text, white space inside it ignored (a key wrapped over lines),
/// or returns `None` when it has the length of neither.
fn decode_hex_or_base32(text: &str) -> Option<Result<(SecretKey, KeyFormat), KeyProblem>> {
    let mut compact = Zeroizing::new([0u8; 64]);
    let mut len = 0;
    for byte in text.bytes().filter(|byte| !byte.is_ascii_whitespace()) {
        *compact.get_mut(len)? = byte;
        len += 1;
    }
    let (encoding, format, name): (&Encoding, _, _) = match len {
        64 => (&HEXLOWER_PERMISSIVE, KeyFormat::Hex, "hex"),
        52 => (&BASE32_NOPAD_NOCASE, KeyFormat::Base32, "base32"),
        _ => return None,
    };
    let mut bytes = Zeroizing::new([0u8; 32]);
    let decoded = match encoding.decode_len(len) {
        Ok(32) => encoding.decode_mut(&compact[..len], &mut bytes[..]).is_ok(),
        _ => false,
    };
    Some(if decoded {
        Ok((SecretKey::from_bytes(&bytes), format))
    } else {
        Err(KeyProblem::InvalidText { encoding: name })
    })
}

fn decode_pem(text: &str) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    const DAMAGED: KeyProblem = KeyProblem::Damaged {
        format: "PKCS#8 PEM",
    };
    match pem::decode_label(text.as_bytes()).map_err(|_| DAMAGED)? {
        "PRIVATE KEY" => {
            let (_, document) = SecretDocument::from_pem(text).map_err(|_| DAMAGED)?;
            decode_pkcs8_der(document.as_bytes(), "PKCS#8 PEM")
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyProblem::Encrypted),
        openssh::LABEL => openssh::decode(text).map(|key| (key, KeyFormat::OpenSsh)),
        "PUBLIC KEY" => Err(KeyProblem::PublicKey),
        label => Err(KeyProblem::OtherPem {
            label: label.to_owned(),
        }),
    }
}

/// Reads PKCS#8 DER; says which PEM format it would be: v2 with the public key, or v1.
fn decode_pkcs8_der(
    der: &[u8],
    format: &'static str,
) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    let damaged = KeyProblem::Damaged { format };
    let info = PrivateKeyInfoRef::try_from(der).map_err(|_| damaged.clone())?;
    if info.algorithm.oid != ALGORITHM_OID {
        return Err(KeyProblem::OtherAlgorithm {
            algorithm: algorithm_name(info.algorithm.oid),
        });
    }
    let mut pair = KeypairBytes::try_from(info).map_err(|_| damaged)?;
    let key = SecretKey::from_bytes(&pair.secret_key);
    // Not zeroed on drop without ed25519's `zeroize` feature (see `encode_key`).
    pair.secret_key.zeroize();
    match &pair.public_key {
        Some(public) if public.as_ref() != key.public().as_bytes() => {
            Err(KeyProblem::PublicKeyMismatch)
        }
        Some(_) => Ok((key, KeyFormat::Pkcs8Pem)),
        None => Ok((key, KeyFormat::Pkcs8PemV1)),
    }
}

/// Whether the text is a line of an OpenSSH `.pub` file (`ssh-ed25519 AAAA... comment`).
fn is_openssh_public_key(text: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
        && text.contains(" AAAA")
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
        assert_eq!(
            (decoded.to_bytes(), format),
            (key.to_bytes(), KeyFormat::Hex)
        );
        // Wrapped over lines, as `xxd -p` writes 32 bytes.
        let wrapped = format!("{}\n{}\n", &hex[..60], &hex[60..]);
        assert_eq!(
            decode_key(wrapped.as_bytes()).map(|(k, _)| k.to_bytes()),
            Ok(key.to_bytes())
        );
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
    fn drop_key(_: (SecretKey, KeyFormat)) {}
}
