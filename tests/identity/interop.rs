//! Keys that people already have load to the right id, and keys this crate writes are
//! read by the real tools: `ssh-keygen` and `openssl` (installed by `.ci/run`).

use std::{fs, path::Path, process::Command, str::FromStr};

use data_encoding::{BASE32_NOPAD, BASE64, HEXLOWER};
use iroh::SecretKey;
use iroh_identity::{KeyFormat, decode_key, encode_key, load_key};

use crate::support::{new_key_file, temp_dir, write_private};

/// Runs a tool and returns its stdout; fails if it is missing or fails.
fn run(tool: &str, args: &[&str]) -> Vec<u8> {
    let output = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {tool} ({err}): install it (see .ci/run)"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The Ed25519 public key in an OpenSSH public key line (`ssh-ed25519 AAAA… comment`):
/// the last 32 bytes of its base64 blob.
fn openssh_public(line: &[u8]) -> [u8; 32] {
    let line = String::from_utf8_lossy(line);
    let mut fields = line.split_whitespace();
    assert_eq!(fields.next(), Some("ssh-ed25519"), "{line}");
    let blob = BASE64
        .decode(fields.next().expect("a base64 blob").as_bytes())
        .expect("base64");
    blob[blob.len() - 32..].try_into().expect("32 bytes")
}

/// The Ed25519 public key in an X.509 SubjectPublicKeyInfo (DER): its last 32 bytes.
fn spki_public(der: &[u8]) -> [u8; 32] {
    assert_eq!(der.len(), 44, "an Ed25519 SubjectPublicKeyInfo");
    der[12..].try_into().expect("32 bytes")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Has `openssl` generate a new Ed25519 key (PKCS#8 v1 PEM, as openssl 3.0 writes it).
fn openssl_generate(path: &Path) {
    run(
        "openssl",
        &["genpkey", "-algorithm", "ed25519", "-out", path_str(path)],
    );
}

/// The public key `openssl` finds in a key file.
fn openssl_public(path: &Path) -> [u8; 32] {
    spki_public(&run(
        "openssl",
        &["pkey", "-in", path_str(path), "-pubout", "-outform", "DER"],
    ))
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs openssl and ssh-keygen, which the Wine prefix does not have"
)]
fn an_ssh_keygen_ed25519_key_keeps_the_id_of_its_pub_file() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("id_ed25519");
    run(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "test",
            "-f",
            path_str(&path),
        ],
    );
    let before = fs::read(&path)?;
    let key = load_key(&path)?;
    let pub_file = fs::read(dir.path().join("id_ed25519.pub"))?;
    assert_eq!(key.public().as_bytes(), &openssh_public(&pub_file));
    assert_eq!(decode_key(&before)?.1, KeyFormat::OpenSsh);
    assert_eq!(fs::read(&path)?, before, "the key file was rewritten");
    Ok(())
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs openssl and ssh-keygen, which the Wine prefix does not have"
)]
fn openssl_pkcs8_keys_pem_and_der_keep_the_id_openssl_prints() -> anyhow::Result<()> {
    let dir = temp_dir();
    let pem = dir.path().join("key.pem");
    let der = dir.path().join("key.der");
    openssl_generate(&pem);
    run(
        "openssl",
        &[
            "pkey",
            "-in",
            path_str(&pem),
            "-outform",
            "DER",
            "-out",
            path_str(&der),
        ],
    );
    let public = openssl_public(&pem);
    for (path, format) in [(&pem, KeyFormat::Pkcs8PemV1), (&der, KeyFormat::Pkcs8Der)] {
        let content = fs::read(path)?;
        write_private(path, &content);
        assert_eq!(load_key(path)?.public().as_bytes(), &public, "{format}");
        assert_eq!(decode_key(&content)?.1, format);
    }
    Ok(())
}

#[test]
fn hex_and_base32_read_as_iroh_reads_them() -> anyhow::Result<()> {
    let key = SecretKey::generate();
    let bytes = key.to_bytes();
    let base32 = BASE32_NOPAD.encode(&bytes);
    for text in [HEXLOWER.encode(&bytes), base32.to_lowercase(), base32] {
        let iroh_reads = SecretKey::from_str(&text)?;
        let (ours, _) = decode_key(text.as_bytes())?;
        assert_eq!(ours.to_bytes(), iroh_reads.to_bytes(), "{text}");
        assert_eq!(ours.to_bytes(), bytes);
    }
    Ok(())
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs openssl and ssh-keygen, which the Wine prefix does not have"
)]
fn an_exported_openssh_key_is_read_by_ssh_keygen() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("exported");
    let key = new_key_file(&dir.path().join("endpoint.key"));
    write_private(&path, &encode_key(&key, KeyFormat::OpenSsh));
    let public = run("ssh-keygen", &["-y", "-f", path_str(&path)]);
    assert_eq!(key.public().as_bytes(), &openssh_public(&public));
    Ok(())
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs openssl and ssh-keygen, which the Wine prefix does not have"
)]
fn an_exported_pkcs8_v1_key_is_read_by_openssl() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("exported.pem");
    let key = new_key_file(&dir.path().join("endpoint.key"));
    write_private(&path, &encode_key(&key, KeyFormat::Pkcs8PemV1));
    assert_eq!(key.public().as_bytes(), &openssl_public(&path));
    Ok(())
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs openssl and ssh-keygen, which the Wine prefix does not have"
)]
fn pem_that_openssl_reads_we_read_to_the_id_openssl_prints() -> anyhow::Result<()> {
    let dir = temp_dir();
    let generated = dir.path().join("generated.pem");
    openssl_generate(&generated);
    // `-text` prints the key's fields after the armour.
    let with_text = run("openssl", &["pkey", "-in", path_str(&generated), "-text"]);
    assert!(String::from_utf8_lossy(&with_text).contains("priv:"));
    let pem = fs::read_to_string(&generated)?;
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let mut der = BASE64.decode(body.as_bytes())?;
    assert_eq!(der[4], 0, "openssl 3.0 writes PKCS#8 v1");
    der[4] = 1;
    let armour =
        |body: &str| format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n");
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("openssl pkey -text", with_text),
        (
            "text before the armour",
            format!("Subject: endpoint\n{pem}").into_bytes(),
        ),
        (
            "a UTF-8 byte order mark",
            format!("\u{feff}{pem}").into_bytes(),
        ),
        (
            "trailing spaces",
            pem.lines()
                .map(|line| format!("{line}   \n"))
                .collect::<String>()
                .into_bytes(),
        ),
        (
            "PKCS#8 v2 without its public key",
            armour(&BASE64.encode(&der)).into_bytes(),
        ),
    ];
    for (name, content) in variants {
        let path = dir.path().join("variant.pem");
        write_private(&path, &content);
        let openssl_id = openssl_public(&path);
        let (ours, _) = decode_key(&content).unwrap_or_else(|problem| panic!("{name}: {problem}"));
        assert_eq!(ours.public().as_bytes(), &openssl_id, "{name}");
    }
    Ok(())
}

#[test]
#[cfg_attr(
    windows,
    ignore = "runs openssl and ssh-keygen, which the Wine prefix does not have"
)]
fn a_bundle_with_the_private_key_anywhere_reads_it_as_openssl_does() -> anyhow::Result<()> {
    let dir = temp_dir();
    let private = dir.path().join("private.pem");
    openssl_generate(&private);
    let public = run("openssl", &["pkey", "-in", path_str(&private), "-pubout"]);
    let private_pem = fs::read(&private)?;
    let certificate =
        b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    let bundles = [
        ("the public key first", [&public[..], &private_pem].concat()),
        (
            "between a certificate and the public key",
            [&certificate[..], &private_pem, &public].concat(),
        ),
    ];
    for (name, bundle) in bundles {
        let path = dir.path().join("bundle.pem");
        write_private(&path, &bundle);
        let openssl_id = openssl_public(&path);
        let (ours, _) = decode_key(&bundle).unwrap_or_else(|problem| panic!("{name}: {problem}"));
        assert_eq!(ours.public().as_bytes(), &openssl_id, "{name}");
        assert_eq!(load_key(&path)?.public(), ours.public(), "{name}");
    }
    // Two private keys: which one is the identity is not guessed.
    let second = encode_key(&SecretKey::generate(), KeyFormat::Pkcs8Pem);
    let two = [&private_pem[..], &second].concat();
    let problem = decode_key(&two).map(|_| ()).expect_err("two keys");
    assert_eq!(problem, iroh_identity::KeyProblem::SeveralKeys { count: 2 });
    assert!(problem.to_string().contains("2 private keys"), "{problem}");
    Ok(())
}
