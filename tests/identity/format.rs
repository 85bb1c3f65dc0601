//! Guarantee 1: new keys are PKCS#8 v2 PEM; every known format loads to the right id;
//! an existing file is never rewritten in another format.

use std::fs;

use data_encoding::{BASE32_NOPAD, HEXLOWER, HEXUPPER};
use ed25519_dalek::{
    SigningKey,
    ed25519::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes},
};
use iroh_identity::{Error, KeyFormat, KeyProblem, decode_key, encode_key, load_key};

use crate::support::{identity_of, known_key, temp_dir, write_private};

#[test]
fn a_new_key_is_pkcs8_v2_pem_holding_its_public_key() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let id = identity_of(&path)?;
    let key = load_key(&path)?;
    assert_eq!(key.public(), id);

    let pem = fs::read_to_string(&path)?;
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{pem}");
    let pair = KeypairBytes::from_pkcs8_pem(&pem)?;
    assert_eq!(pair.secret_key, key.to_bytes());
    let public = pair.public_key.expect("PKCS#8 v2 carries the public key");
    assert_eq!(public.as_ref(), key.public().as_bytes());
    Ok(())
}

#[test]
fn every_known_format_loads_to_the_same_id_and_stays_as_it_was() -> anyhow::Result<()> {
    let key = known_key();
    let bytes = key.to_bytes();
    let signing_key = SigningKey::from_bytes(&bytes);
    let pem_v1 = KeypairBytes {
        secret_key: bytes,
        public_key: None,
    }
    .to_pkcs8_pem(Default::default())?;
    let formats: Vec<(&str, Vec<u8>)> = vec![
        (
            "PKCS#8 v2 PEM",
            signing_key
                .to_pkcs8_pem(Default::default())?
                .as_bytes()
                .to_vec(),
        ),
        (
            "PKCS#8 v1 PEM (openssl genpkey)",
            pem_v1.as_bytes().to_vec(),
        ),
        (
            "PKCS#8 PEM with CRLF line ends",
            pem_v1.replace('\n', "\r\n").into_bytes(),
        ),
        (
            "PKCS#8 PEM without a final newline",
            pem_v1.trim_end().as_bytes().to_vec(),
        ),
        (
            "PKCS#8 v2 DER",
            signing_key.to_pkcs8_der()?.as_bytes().to_vec(),
        ),
        ("raw 32 bytes (iroh's docs)", bytes.to_vec()),
        ("hex", HEXLOWER.encode(&bytes).into_bytes()),
        (
            "upper-case hex with a newline",
            format!("{}\n", HEXUPPER.encode(&bytes)).into_bytes(),
        ),
        (
            "hex wrapped over two lines (xxd -p)",
            format!(
                "{}\n{}\n",
                &HEXLOWER.encode(&bytes)[..60],
                &HEXLOWER.encode(&bytes)[60..]
            )
            .into_bytes(),
        ),
        ("base32", BASE32_NOPAD.encode(&bytes).into_bytes()),
        (
            "lower-case base32 with spaces",
            format!("  {}  \n", BASE32_NOPAD.encode(&bytes).to_lowercase()).into_bytes(),
        ),
    ];
    for (format, content) in formats {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        write_private(&path, &content);
        let loaded = load_key(&path).unwrap_or_else(|err| panic!("{format} does not load: {err}"));
        assert_eq!(loaded.public(), key.public(), "{format}");
        assert_eq!(fs::read(&path)?, content, "{format} was rewritten");
    }
    Ok(())
}

#[test]
fn the_same_file_gives_the_same_key_every_time() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    identity_of(&path)?;
    let first = load_key(&path)?;
    let content = fs::read(&path)?;
    for _ in 0..3 {
        assert_eq!(load_key(&path)?.to_bytes(), first.to_bytes());
    }
    assert_eq!(fs::read(&path)?, content);
    Ok(())
}

/// `pem` with its base64 rewrapped at `width` characters a line.
fn rewrap(pem: &str, width: usize) -> String {
    let lines: Vec<&str> = pem.lines().collect();
    let body: String = lines[1..lines.len() - 1].concat();
    let wrapped: Vec<String> = body
        .as_bytes()
        .chunks(width)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    format!(
        "{}\n{}\n{}\n",
        lines[0],
        wrapped.join("\n"),
        lines[lines.len() - 1]
    )
}

#[test]
fn pem_is_read_as_leniently_as_openssl_reads_it() -> anyhow::Result<()> {
    let key = known_key();
    let signing_key = SigningKey::from_bytes(&key.to_bytes());
    let pem = signing_key.to_pkcs8_pem(Default::default())?.to_string();
    let mut v2_without_public_key = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_der()?
    .as_bytes()
    .to_vec();
    assert_eq!(v2_without_public_key[4], 0, "version v1");
    v2_without_public_key[4] = 1;
    let v2_without_public_key = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        data_encoding::BASE64.encode(&v2_without_public_key)
    );
    let variants: Vec<(&str, String)> = vec![
        ("wrapped at 76", rewrap(&pem, 76)),
        ("on a single line", rewrap(&pem, 1000)),
        (
            "explanatory text before the armour",
            format!("Subject: endpoint\nnot: base64 ===\n{pem}"),
        ),
        (
            "text after the armour (openssl genpkey -text)",
            format!("{pem}ED25519 Private-Key:\npriv:\n    00:11:22\n"),
        ),
        ("a UTF-8 byte order mark", format!("\u{feff}{pem}")),
        (
            "trailing spaces",
            pem.lines().map(|line| format!("{line}  \t\n")).collect(),
        ),
        ("PKCS#8 v2 without its public key", v2_without_public_key),
    ];
    for (name, content) in variants {
        let (read, _) = iroh_identity::decode_key(content.as_bytes())
            .unwrap_or_else(|problem| panic!("{name}: {problem}"));
        assert_eq!(read.public(), key.public(), "{name}");
    }
    Ok(())
}

#[test]
fn errors_read_as_sentences_alone_and_as_causes() -> anyhow::Result<()> {
    use iroh_identity::{Error, KeyProblem, decode_key};

    // Alone: what `decode_key(..)?` prints in a program.
    let problem = decode_key(b"").expect_err("empty");
    assert_eq!(problem, KeyProblem::Empty);
    assert_eq!(problem.to_string(), "the key is empty");
    // As the cause of a key file's error: the chain reads as one sentence.
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, b"");
    let err = load_key(&path).expect_err("an empty file");
    assert!(
        matches!(
            &err,
            Error::InvalidKey {
                problem: KeyProblem::Empty,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        format!("{:#}", anyhow::Error::from(err)),
        format!(
            "key file {} is not a usable Ed25519 key; it was left unchanged: the key is empty",
            path.display()
        )
    );
    // An I/O error says which operation on which path, and its cause once.
    let file = dir.path().join("file");
    write_private(&file, b"");
    let err = load_key(file.join("endpoint.key")).expect_err("a file as a directory");
    assert!(
        matches!(
            &err,
            Error::Io {
                operation: iroh_identity::Operation::OpenDirectory,
                path,
                ..
            } if *path == file
        ),
        "{err:?}"
    );
    let chain = format!("{:#}", anyhow::Error::from(err));
    // Linux says "Not a directory"; Windows (and Wine) "not a directory".
    let lower = chain.to_lowercase();
    assert_eq!(lower.matches("not a directory").count(), 1, "{chain}");
    Ok(())
}

#[test]
fn keys_everyone_knows_are_refused() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let zero = iroh::SecretKey::from_bytes(&[0; 32]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("32 zero bytes (a zeroed file)", vec![0; 32]),
        ("32 bytes of 0xff", vec![0xff; 32]),
        (
            "the zero seed as this crate writes a key",
            encode_key(&zero, KeyFormat::Pkcs8Pem).to_vec(),
        ),
        ("64 zeros of hex", b"0".repeat(64)),
        (
            "one byte repeated, as OpenSSH",
            encode_key(
                &iroh::SecretKey::from_bytes(&[0x41; 32]),
                KeyFormat::OpenSsh,
            )
            .to_vec(),
        ),
    ];
    for (name, content) in cases {
        write_private(&path, &content);
        let err = identity_of(&path).expect_err(name);
        assert!(
            matches!(
                err,
                Error::InvalidKey {
                    problem: KeyProblem::KnownToEveryone,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
        let message = crate::support::child::chain(&err);
        assert!(
            message.contains("everyone knows its secret"),
            "{name}: {message}"
        );
        assert_eq!(
            fs::read(&path)?,
            content,
            "{name}: the file is left as it was"
        );
    }
    Ok(())
}

#[test]
fn a_raw_key_that_starts_like_a_byte_order_mark_is_a_raw_key() -> anyhow::Result<()> {
    // One key in 2^24 starts with the bytes of a UTF-8 byte order mark.
    let mut bytes: [u8; 32] = std::array::from_fn(|i| 0x80 | i as u8);
    bytes[..3].copy_from_slice(b"\xef\xbb\xbf");
    let key = iroh::SecretKey::from_bytes(&bytes);
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, &bytes);
    assert_eq!(identity_of(&path)?, key.public());
    assert_eq!(decode_key(&bytes)?.1, KeyFormat::Raw);
    Ok(())
}
