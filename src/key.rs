//! Parsing and encoding a key: what the bytes of a key file mean.
//!
//! The format is detected from the content, never from the file name, so that every key
//! a user already has keeps its identity:
//!
//! | content                                  | format            |
//! |------------------------------------------|-------------------|
//! | exactly 32 bytes that are not text       | raw secret key    |
//! | a `-----BEGIN PRIVATE KEY-----` line ...  | PKCS#8 PEM        |
//! | a `-----BEGIN OPENSSH PRIVATE KEY-----` line | OpenSSH        |
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
        spki::der::pem::LineEnding,
    },
};
use iroh::SecretKey;
use zeroize::{Zeroize, Zeroizing};

mod openssh;
mod pem;

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
/// The format is told by the content, never by a name: 32 bytes that are not text are a
/// raw key; text with a `-----BEGIN ` line is PEM (PKCS#8 or OpenSSH); 64 hex or 52
/// base32 characters (either case, white space around or inside them ignored) are text;
/// a DER `SEQUENCE` is PKCS#8 DER. Key files are read with this parser; use it for keys
/// that come from somewhere else (a secret manager, say).
///
/// PEM is read as OpenSSL reads it: lines of any width (76, or all on one line),
/// white space at their ends, a UTF-8 byte order mark, and explanatory text before or
/// after the armour (what `openssl genpkey -text` prints) are all fine, and so is a
/// PKCS#8 v2 key without its optional public key. A bundle is read for its one private
/// key wherever it stands (after a public key or a certificate); line breaks that became
/// spaces or carriage returns (a PEM pasted into a one-line field) are white space too.
///
/// It is more lenient than iroh's own `SecretKey::from_str`, which takes lower-case hex
/// or base32 with nothing around it: `iroh-identity export --format hex` (or
/// [`encode_key`] with [`KeyFormat::Hex`]) writes that form, for iroh's tools.
///
/// ```
/// use iroh_identity::{KeyFormat, decode_key};
///
/// let hex = "00112233445566778899aabbccddeeff".repeat(2);
/// let (key, format) = decode_key(hex.as_bytes())?;
/// assert_eq!(format, KeyFormat::Hex);
/// assert_eq!(key.to_bytes()[..4], [0x00, 0x11, 0x22, 0x33]);
/// # Ok::<(), iroh_identity::KeyProblem>(())
/// ```
///
/// # Errors
///
/// A [`KeyProblem`] saying why the bytes are not an Ed25519 secret key: empty, of an
/// unknown format, a public key, damaged, encrypted, of another algorithm, PKCS#8 whose
/// public key does not match its secret key, several private keys, 32 bytes of text,
/// which would be another key if read as raw bytes (a PEM line or a hex key cut short, a
/// password), or a key whose secret everyone knows: one byte repeated (32 zero bytes from
/// a zeroed file, say). Neither iroh nor ed25519-dalek keeps a list of known keys (dalek's
/// `is_weak` is about public keys of small order, which no seed gives).
///
/// # Security
///
/// The error holds no key material: nothing of the input but a PEM label or an algorithm
/// that the crate knows by name, and byte counts. The key's bytes pass through buffers that
/// are zeroed when dropped; the input is the caller's to zero.
///
pub fn decode_key(bytes: &[u8]) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    let (key, format) = decode_any(bytes)?;
    refuse_known(key).map(|key| (key, format))
}

/// [`decode_key`] without the refusal of keys everyone knows.
fn decode_any(bytes: &[u8]) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    // Before anything is taken away as text: a raw key may start like a byte order mark.
    if bytes.len() == 32 && !is_text(bytes) {
        let mut raw = Zeroizing::new([0u8; 32]);
        raw.copy_from_slice(bytes);
        return Ok((SecretKey::from_bytes(&raw), KeyFormat::Raw));
    }
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyProblem::Empty);
        }
        if text.contains(pem::BEGIN) {
            return decode_pem(text);
        }
        if let Some(decoded) = decode_hex_or_base32(text) {
            return decoded;
        }
        if is_prefixed_hex(text) {
            return Err(KeyProblem::HexPrefix);
        }
        if is_openssh_public_key(text) {
            return Err(KeyProblem::PublicKey);
        }
        if bytes.len() == 32 {
            return Err(KeyProblem::AmbiguousText);
        }
    }
    if bytes.first() == Some(&0x30) {
        return decode_pkcs8_der(bytes, KeyFormat::Pkcs8Der)
            .map(|(key, _)| (key, KeyFormat::Pkcs8Der));
    }
    Err(KeyProblem::UnknownFormat { len: bytes.len() })
}

/// Refuses a key whose secret everyone knows: one byte repeated, all zero above all (a
/// zeroed file, a template). Neither iroh nor ed25519-dalek keeps a list of such keys
/// (dalek's `is_weak` is about public keys of small order, which no seed gives).
fn refuse_known(key: SecretKey) -> Result<SecretKey, KeyProblem> {
    let secret = Zeroizing::new(key.to_bytes());
    if secret.iter().all(|&byte| byte == secret[0]) {
        return Err(KeyProblem::KnownToEveryone);
    }
    Ok(key)
}

/// The byte order mark some editors put at the start of UTF-8 text.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// Whether 32 bytes are text (UTF-8 with no control character but tab and line ends)
/// rather than a raw key. A random key is text with a chance below 2 in 10^11.
fn is_text(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|text| {
        text.chars()
            .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
    })
}

/// Whether the text is a hex key behind a `0x` (64 hex digits, white space ignored).
fn is_prefixed_hex(text: &str) -> bool {
    let Some(digits) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) else {
        return false;
    };
    let mut count = 0;
    for c in digits.chars().filter(|c| !c.is_whitespace()) {
        if !c.is_ascii_hexdigit() {
            return false;
        }
        count += 1;
    }
    count == 64
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
                .to_pkcs8_pem(LineEnding::LF)
                .expect("a 32-byte Ed25519 key always encodes as PKCS#8");
            Zeroizing::new(pem.as_bytes().to_vec())
        }
        KeyFormat::Pkcs8PemV1 => {
            let mut pair = KeypairBytes {
                secret_key: *secret,
                public_key: None,
            };
            let pem = pair
                .to_pkcs8_pem(LineEnding::LF)
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
    let (key, format) = decode_hex_or_base32(text).unwrap_or(Err(KeyProblem::NotHexOrBase32 {
        len: text.chars().filter(|c| !c.is_whitespace()).count(),
    }))?;
    refuse_known(key).map(|key| (key, format))
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
    let (encoding, format): (&Encoding, _) = match len {
        64 => (&HEXLOWER_PERMISSIVE, KeyFormat::Hex),
        52 => (&BASE32_NOPAD_NOCASE, KeyFormat::Base32),
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
        Err(KeyProblem::InvalidText { format })
    })
}

/// Reads PEM text: the one private key among its blocks, wherever it stands (after a
/// public key or a certificate, say), as `openssl pkey` finds it.
fn decode_pem(text: &str) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    let blocks = pem::blocks(text);
    let whole: Vec<&pem::Block<'_>> = blocks
        .iter()
        .filter_map(|block| block.as_ref().ok())
        .collect();
    let private: Vec<&pem::Block<'_>> = whole
        .iter()
        .copied()
        .filter(|block| block.is_private_key())
        .collect();
    let broken = blocks.iter().find_map(|block| block.as_ref().err());
    match (private.as_slice(), broken) {
        ([one], _) => decode_pem_block(one),
        ([], Some(broken)) => Err(KeyProblem::Damaged {
            format: match broken.label {
                Some(openssh::LABEL) => KeyFormat::OpenSsh,
                _ => KeyFormat::Pkcs8Pem,
            },
        }),
        ([], None) => match whole.first() {
            Some(first) => decode_pem_block(first),
            None => Err(KeyProblem::Damaged {
                format: KeyFormat::Pkcs8Pem,
            }),
        },
        (several, _) => Err(KeyProblem::SeveralKeys {
            count: several.len(),
        }),
    }
}

/// Reads one PEM block.
fn decode_pem_block(block: &pem::Block<'_>) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    let damaged = |format| KeyProblem::Damaged { format };
    match block.label {
        "PRIVATE KEY" => {
            let der = block.contents().ok_or(damaged(KeyFormat::Pkcs8Pem))?;
            decode_pkcs8_der(&der, KeyFormat::Pkcs8Pem)
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyProblem::Encrypted),
        openssh::LABEL => {
            let blob = block.contents().ok_or(damaged(KeyFormat::OpenSsh))?;
            openssh::decode(&blob).map(|key| (key, KeyFormat::OpenSsh))
        }
        "PUBLIC KEY" => Err(KeyProblem::PublicKey),
        _ => Err(KeyProblem::OtherPem {
            label: block.known_label(),
        }),
    }
}

/// Reads PKCS#8 DER; says which PEM format it would be: v2 with the public key, or v1.
/// A v2 key without its optional public key, which OpenSSL reads, is read as v1.
fn decode_pkcs8_der(der: &[u8], format: KeyFormat) -> Result<(SecretKey, KeyFormat), KeyProblem> {
    let damaged = KeyProblem::Damaged { format };
    let info = match PrivateKeyInfoRef::try_from(der) {
        Ok(info) => info,
        Err(_) => {
            let as_v1 = v2_without_public_key_as_v1(der).ok_or(damaged.clone())?;
            return match decode_pkcs8_der(&as_v1, format)? {
                (key, KeyFormat::Pkcs8PemV1) => Ok((key, KeyFormat::Pkcs8PemV1)),
                _ => Err(damaged),
            };
        }
    };
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

/// A copy of PKCS#8 DER whose version says v2 (1), with the version changed to v1 (0):
/// the `pkcs8` crate refuses a v2 key without its public key, which the standard allows.
/// `None` if the DER does not start with a `SEQUENCE` and the version `INTEGER 1`.
fn v2_without_public_key_as_v1(der: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let header = match der.get(..2)? {
        [0x30, len] if *len < 0x80 => 2,
        [0x30, 0x81] => 3,
        [0x30, 0x82] => 4,
        _ => return None,
    };
    if der.get(header..header + 3)? != [0x02, 0x01, 0x01] {
        return None;
    }
    let mut copy = Zeroizing::new(der.to_vec());
    copy[header + 2] = 0x00;
    Some(copy)
}

/// Whether the text is a line of an OpenSSH `.pub` file (`ssh-ed25519 AAAA... comment`).
fn is_openssh_public_key(text: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|prefix| text.starts_with(prefix))
        && text.contains(" AAAA")
}

/// Names the algorithms whose keys people most often mistake for an iroh key; `None` for
/// any other (its identifier is not echoed: it comes from the key's bytes).
fn algorithm_name(oid: ObjectIdentifier) -> Option<&'static str> {
    Some(match oid.to_string().as_str() {
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "elliptic-curve (ECDSA)",
        "1.3.101.110" => "X25519",
        "1.3.101.111" => "X448",
        "1.3.101.113" => "Ed448",
        "1.2.840.10040.4.1" => "DSA",
        _ => return None,
    })
}

/// What is wrong with the content of a key file or environment variable.
///
/// Its message is a sentence about "the key", which reads alone (what
/// [`decode_key`] returns) and as the cause of an
/// [`Error::InvalidKey`](crate::Error::InvalidKey) or
/// [`Error::InvalidEnvKey`](crate::Error::InvalidEnvKey).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// There is nothing in it (or only white space).
    #[error("the key is empty")]
    Empty,
    /// It is larger than any key file could be, so it was not read.
    #[error("the key is {len} bytes, too large to be a key")]
    TooLarge {
        /// Its size in bytes.
        len: u64,
    },
    /// Its content matches none of the formats this crate reads.
    #[error(
        "the key is in no known format ({len} byte{}; expected PKCS#8 or OpenSSH PEM, PKCS#8 \
         DER, 32 raw bytes, or 64 hex or 52 base32 characters)",
        if *len == 1 { "" } else { "s" }
    )]
    UnknownFormat {
        /// Its size in bytes.
        len: usize,
    },
    /// It is not 64 hex or 52 base32 characters (environment variables only).
    #[error("the key is not 64 hex or 52 base32 characters (it has {len})")]
    NotHexOrBase32 {
        /// Its length in characters, after trimming white space.
        len: usize,
    },
    /// It has the length of a hex or base32 key but characters outside that alphabet.
    #[error("the key has the length of a {format} key but is not valid {format}")]
    InvalidText {
        /// [`KeyFormat::Hex`] or [`KeyFormat::Base32`].
        format: KeyFormat,
    },
    /// It is 32 bytes of text: too short to be a hex (64) or base32 (52) key, and not
    /// read as a raw key (32 binary bytes), which would make it another identity: a PEM
    /// line or a text key cut short, or a password.
    #[error(
        "the key is 32 bytes of text: a raw key is 32 binary bytes and a text key 64 hex or \
         52 base32 characters (a key cut short, or a password?)"
    )]
    AmbiguousText,
    /// It is a hex key written with a `0x` in front.
    #[error("the key is hex with a `0x` in front; write the 64 hex digits alone")]
    HexPrefix,
    /// It starts like a known format but does not decode: truncated or corrupted.
    #[error("the key is a damaged or truncated {} key", damaged_name(*format))]
    Damaged {
        /// The format it claims to be. A PEM `PRIVATE KEY` of either version is
        /// [`KeyFormat::Pkcs8Pem`].
        format: KeyFormat,
    },
    /// The public key stored beside the secret key does not match it.
    #[error("the key holds a public key that does not match its secret key (it is damaged)")]
    PublicKeyMismatch,
    /// It is an encrypted private key.
    #[error("the key is encrypted; store it unencrypted, protected by file permissions")]
    Encrypted,
    /// It is a PKCS#8 or OpenSSH key of another algorithm.
    #[error("the key is for {}, not for Ed25519", algorithm.unwrap_or("another algorithm"))]
    OtherAlgorithm {
        /// The algorithm, when it is one the crate knows by name (RSA, ECDSA, X25519,
        /// ...); what the key says otherwise is not repeated.
        algorithm: Option<&'static str>,
    },
    /// It is a public key (PEM `PUBLIC KEY`, or an OpenSSH `.pub` line): the secret key
    /// is in another file.
    #[error(
        "the key is a public key; give the secret key instead (for OpenSSH, the file \
         without .pub)"
    )]
    PublicKey,
    /// It is PEM, but of something other than a private key.
    #[error(
        "the key is PEM of {}, not an Ed25519 private key",
        label.map_or_else(|| "a kind this crate does not know".to_owned(), |label| format!("\"{label}\""))
    )]
    OtherPem {
        /// The PEM label when it is one the crate knows (`RSA PRIVATE KEY`,
        /// `CERTIFICATE`, ...); what the file says otherwise is not repeated.
        label: Option<&'static str>,
    },
    /// It holds several private keys (PEM blocks): which one is the identity is not
    /// guessed.
    #[error("the key file holds {count} private keys; keep the one to use alone in it")]
    SeveralKeys {
        /// How many.
        count: usize,
    },
    /// Its secret is one byte repeated (32 zero bytes, say, from a zeroed file or a
    /// template): a secret everyone knows, so anyone could run the identity.
    #[error(
        "the key is one byte repeated (all zeros, say): everyone knows its secret, so anyone \
         could run this identity; generate a new key"
    )]
    KnownToEveryone,
}

/// A format's name in "a damaged … key": PEM of either PKCS#8 version is one.
fn damaged_name(format: KeyFormat) -> String {
    match format {
        KeyFormat::Pkcs8Pem | KeyFormat::Pkcs8PemV1 => "PKCS#8 PEM".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_case_insensitive() {
        let key = SecretKey::from_bytes(&std::array::from_fn(|i| 7 + i as u8));
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
            Err(KeyProblem::InvalidText {
                format: KeyFormat::Hex
            })
        );
    }

    /// `SecretKey` is not `PartialEq`; compare results without it.
    fn drop_key(_: (SecretKey, KeyFormat)) {}
}
