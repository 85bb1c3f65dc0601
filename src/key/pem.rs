//! PEM armour read leniently, as OpenSSL reads it (RFC 7468's "lax" parsing): lines of
//! any width, white space anywhere in the base64, text before, between and after blocks.
//! Line breaks that became spaces or carriage returns (a PEM pasted into a one-line field)
//! are white space like any other.
//!
//! Nothing of a block but a label this crate knows ever leaves this module in an error:
//! what follows `-----BEGIN ` may be the base64 of a key whose line breaks are gone.

use data_encoding::BASE64;
use zeroize::Zeroizing;

pub(super) const BEGIN: &str = "-----BEGIN ";
const DASHES: &str = "-----";

/// The longest label looked for: the longest known is 26 bytes.
const MAX_LABEL: usize = 64;

/// The labels this crate knows, the only ones an error names.
const KNOWN_LABELS: &[&str] = &[
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "OPENSSH PRIVATE KEY",
    "PUBLIC KEY",
    "RSA PRIVATE KEY",
    "RSA PUBLIC KEY",
    "EC PRIVATE KEY",
    "EC PARAMETERS",
    "DSA PRIVATE KEY",
    "CERTIFICATE",
    "CERTIFICATE REQUEST",
    "X509 CRL",
    "PGP PRIVATE KEY BLOCK",
    "PGP PUBLIC KEY BLOCK",
    "SSH2 ENCRYPTED PRIVATE KEY",
];

/// One PEM block: its label and the text between its armour lines.
#[derive(Debug)]
pub(super) struct Block<'a> {
    pub(super) label: &'a str,
    body: &'a str,
}

impl Block<'_> {
    /// The label, if it is one this crate knows: what an error may name.
    pub(super) fn known_label(&self) -> Option<&'static str> {
        KNOWN_LABELS
            .iter()
            .copied()
            .find(|&known| known == self.label)
    }

    /// Whether it holds a private key, of any algorithm.
    pub(super) fn is_private_key(&self) -> bool {
        self.label.ends_with("PRIVATE KEY")
    }

    /// The bytes of its base64, white space ignored; `None` if it is not base64.
    pub(super) fn contents(&self) -> Option<Zeroizing<Vec<u8>>> {
        let base64 = Zeroizing::new(
            self.body
                .bytes()
                .filter(|byte| !byte.is_ascii_whitespace())
                .collect::<Vec<u8>>(),
        );
        let mut decoded = Zeroizing::new(vec![0u8; BASE64.decode_len(base64.len()).ok()?]);
        let len = BASE64.decode_mut(&base64, &mut decoded).ok()?;
        decoded.truncate(len);
        Some(decoded)
    }
}

/// A block that is not whole: a `-----BEGIN ` with no valid label, or with no `-----END`
/// line for its label (then the label).
#[derive(Debug)]
pub(super) struct Broken<'a> {
    pub(super) label: Option<&'a str>,
}

/// The blocks of `text`, in order, up to the first one that is not whole.
pub(super) fn blocks(text: &str) -> Vec<Result<Block<'_>, Broken<'_>>> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        // A label of one line; its armour's dashes may be followed by anything, the
        // base64 itself when the line breaks are gone.
        let Some(label) = after
            .find(DASHES)
            .map(|len| &after[..len])
            .filter(|label| label.len() <= MAX_LABEL && !label.contains(['\n', '\r']))
        else {
            blocks.push(Err(Broken { label: None }));
            break;
        };
        let label_len = label.len();
        let body_and_rest = &after[label_len + DASHES.len()..];
        let end = format!("-----END {label}-----");
        let Some(body_len) = body_and_rest.find(&end) else {
            blocks.push(Err(Broken { label: Some(label) }));
            break;
        };
        blocks.push(Ok(Block {
            label,
            body: &body_and_rest[..body_len],
        }));
        rest = &body_and_rest[body_len + end.len()..];
    }
    blocks
}
