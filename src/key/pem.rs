//! PEM armour read leniently, as OpenSSL reads it (RFC 7468's "lax" parsing): lines of
//! any width, white space anywhere in the base64, text before and after the armour.

use data_encoding::BASE64;
use zeroize::Zeroizing;

pub(super) const BEGIN: &str = "-----BEGIN ";

/// The label of the `-----BEGIN LABEL-----` line that `text` starts with.
pub(super) fn label(text: &str) -> Option<&str> {
    let line = text.lines().next()?.trim_end();
    line.strip_prefix(BEGIN)?.strip_suffix("-----")
}

/// The bytes between the `BEGIN` line and its `END` line.
pub(super) fn contents(text: &str, label: &str) -> Option<Zeroizing<Vec<u8>>> {
    let (_, rest) = text.split_once('\n')?;
    let end = rest.find(&format!("-----END {label}-----"))?;
    let base64 = Zeroizing::new(
        rest[..end]
            .bytes()
            .filter(|byte| !byte.is_ascii_whitespace())
            .collect::<Vec<u8>>(),
    );
    let mut decoded = Zeroizing::new(vec![0u8; BASE64.decode_len(base64.len()).ok()?]);
    let len = BASE64.decode_mut(&base64, &mut decoded).ok()?;
    decoded.truncate(len);
    Some(decoded)
}
