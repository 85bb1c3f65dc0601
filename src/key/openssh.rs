//! OpenSSH private keys (`-----BEGIN OPENSSH PRIVATE KEY-----`), Ed25519 and unencrypted:
//! what `ssh-keygen -t ed25519 -N ""` writes.
//!
//! The format (OpenSSH's `PROTOCOL.key`) is a sequence of big-endian `u32` lengths and
//! strings: a magic, the cipher and KDF names and options, the number of keys, the public
//! key, then a private section holding two equal check numbers, the key type, the public
//! key, the 64-byte secret (the 32-byte seed, then the public key), a comment and padding.

use ed25519_dalek::ed25519::pkcs8::spki::der::pem::{self, LineEnding};
use iroh::SecretKey;
use zeroize::Zeroizing;

use super::{KeyFormat, KeyProblem};

pub(super) const LABEL: &str = "OPENSSH PRIVATE KEY";
const MAGIC: &[u8] = b"openssh-key-v1\0";
const KEY_TYPE: &[u8] = b"ssh-ed25519";
/// OpenSSH wraps its base64 at 70 characters, not PEM's 64.
const LINE_WIDTH: usize = 70;
/// The private section is padded to this (the block size of the cipher "none").
const BLOCK: usize = 8;

const DAMAGED: KeyProblem = KeyProblem::Damaged {
    format: KeyFormat::OpenSsh,
};

/// Reads an OpenSSH private key from the bytes inside its PEM armour.
pub(super) fn decode(blob: &[u8]) -> Result<SecretKey, KeyProblem> {
    let mut reader = Reader(blob);
    if reader.take(MAGIC.len())? != MAGIC {
        return Err(DAMAGED);
    }
    let cipher = reader.string()?;
    let kdf = reader.string()?;
    reader.string()?; // KDF options
    if cipher != b"none" || kdf != b"none" {
        return Err(KeyProblem::Encrypted);
    }
    if reader.u32()? != 1 {
        return Err(DAMAGED);
    }
    let mut public_blob = Reader(reader.string()?);
    let key_type = public_blob.string()?;
    if key_type != KEY_TYPE {
        return Err(KeyProblem::OtherAlgorithm {
            algorithm: algorithm_name(key_type),
        });
    }
    let public = public_blob.string()?;

    let mut private = Reader(reader.string()?);
    if private.u32()? != private.u32()? || private.string()? != KEY_TYPE {
        return Err(DAMAGED);
    }
    let inner_public = private.string()?;
    let pair = private.string()?;
    if pair.len() != 64 {
        return Err(DAMAGED);
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&pair[..32]);
    let key = SecretKey::from_bytes(&seed);
    let derived = key.public();
    if [public, inner_public, &pair[32..]]
        .iter()
        .any(|claimed| *claimed != derived.as_bytes())
    {
        return Err(KeyProblem::PublicKeyMismatch);
    }
    Ok(key)
}

/// The algorithms of the OpenSSH key types people have; `None` for any other (the type is
/// not echoed: it comes from the key's bytes).
fn algorithm_name(key_type: &[u8]) -> Option<&'static str> {
    Some(match key_type {
        b"ssh-rsa" => "RSA",
        b"ssh-dss" => "DSA",
        b"ecdsa-sha2-nistp256" | b"ecdsa-sha2-nistp384" | b"ecdsa-sha2-nistp521" => {
            "elliptic-curve (ECDSA)"
        }
        b"sk-ssh-ed25519@openssh.com" => "Ed25519 on a security key (FIDO)",
        b"sk-ecdsa-sha2-nistp256@openssh.com" => "ECDSA on a security key (FIDO)",
        _ => return None,
    })
}

/// Writes a key as OpenSSH does for `ssh-keygen -t ed25519 -N ""`, with an empty comment.
pub(super) fn encode(key: &SecretKey) -> Zeroizing<Vec<u8>> {
    let public = key.public();
    let public = public.as_bytes();
    let public_blob_len = 4 + KEY_TYPE.len() + 4 + 32;
    // The two check numbers only detect a wrong passphrase; for "none" any equal pair
    // does. Taken from the public key, so that the same key always encodes the same.
    let check = &public[..4];

    let unpadded = 8 + (4 + KEY_TYPE.len()) + (4 + 32) + (4 + 64) + 4;
    let private_len = unpadded.next_multiple_of(BLOCK);
    let total = MAGIC.len()
        + (4 + 4) * 2 // "none", "none"
        + 4 // empty KDF options
        + 4 // number of keys
        + 4 + public_blob_len
        + 4 + private_len;
    let mut blob = Zeroizing::new(Vec::with_capacity(total));
    blob.extend_from_slice(MAGIC);
    for text in [&b"none"[..], b"none", b""] {
        put_string(&mut blob, text);
    }
    blob.extend_from_slice(&1u32.to_be_bytes());
    put_len(&mut blob, public_blob_len);
    put_string(&mut blob, KEY_TYPE);
    put_string(&mut blob, public);
    put_len(&mut blob, private_len);
    blob.extend_from_slice(check);
    blob.extend_from_slice(check);
    put_string(&mut blob, KEY_TYPE);
    put_string(&mut blob, public);
    put_len(&mut blob, 64);
    blob.extend_from_slice(&Zeroizing::new(key.to_bytes())[..]);
    blob.extend_from_slice(public);
    put_string(&mut blob, b"");
    for pad in 1..=(private_len - unpadded) {
        blob.push(pad as u8);
    }
    debug_assert_eq!(blob.len(), total);

    let armoured_len = pem::encapsulated_len_wrapped(LABEL, LINE_WIDTH, LineEnding::LF, total)
        .expect("a key is far from any length limit");
    let mut armoured = Zeroizing::new(vec![0u8; armoured_len]);
    let mut encoder = pem::Encoder::new_wrapped(LABEL, LINE_WIDTH, LineEnding::LF, &mut armoured)
        .expect("the buffer has the exact length");
    encoder
        .encode(&blob)
        .expect("the buffer has the exact length");
    let written = encoder.finish().expect("the buffer has the exact length");
    armoured.truncate(written);
    armoured
}

fn put_len(blob: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("key fields are short");
    blob.extend_from_slice(&len.to_be_bytes());
}

fn put_string(blob: &mut Vec<u8>, bytes: &[u8]) {
    put_len(blob, bytes.len());
    blob.extend_from_slice(bytes);
}

/// Reads the format's fields off the front of a byte string.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], KeyProblem> {
        if self.0.len() < len {
            return Err(DAMAGED);
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, KeyProblem> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn string(&mut self) -> Result<&'a [u8], KeyProblem> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}
