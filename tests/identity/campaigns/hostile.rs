//! Hostile input (guarantee 2): an existing key file is never overwritten, replaced or
//! deleted. Whatever is wrong with it, from a foreign key made by openssl or ssh-keygen
//! (in `corpus/`, see `generate.sh`) to a FIFO or a 1 GiB sparse file, is its own error
//! naming the path, and the path stays exactly as it was (type, inode, mtime, mode,
//! bytes).

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use data_encoding::{BASE32_NOPAD, HEXLOWER};
use ed25519_dalek::{
    SigningKey,
    ed25519::pkcs8::{EncodePrivateKey, KeypairBytes, PublicKeyBytes},
};
use iroh::SecretKey;
use iroh_identity::{Error, FileKind, KeyFormat, KeyProblem, encode_key, load_key};

use super::figure;
use crate::support::{
    LogCapture, Rng, Snapshot, assert_no_secret, builder, child::chain, known_key, symlink,
    temp_dir, write_private,
};
#[cfg(unix)]
use crate::{
    read_only::ReadOnlyKey,
    support::{child::run_to_end, is_root},
};

/// Opens `path` both ways (the key alone, and an endpoint), checks that each fails as
/// `expected` says with the path in the message, and that the path is untouched. Returns
/// the message with its causes, with `PATH` for the path.
fn assert_refused_unchanged(path: &Path, expected: impl Fn(&Error) -> bool) -> String {
    let before = Snapshot::of(path);
    let (logs, guard) = LogCapture::start();
    let key_only = load_key(path).map(|_| ());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let endpoint = runtime.block_on(async { builder(path).bind().await.map(|_| ()) });
    for result in [key_only, endpoint] {
        let err = result.expect_err("a bad key file must not open");
        assert!(
            expected(&err),
            "unexpected error for {}: {err:?}",
            path.display()
        );
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "the message does not name the path: {message}"
        );
    }
    assert_eq!(Snapshot::of(path), before, "{} was changed", path.display());
    let dir = path.parent().expect("parent");
    assert_eq!(
        crate::support::list(dir),
        [path.file_name().expect("name").to_string_lossy()]
    );
    let err = load_key(path).expect_err("refused");
    drop(guard);
    let message = chain(&err);
    assert_nothing_repeated(
        &before,
        &[logs.bytes(), format!("{message}{err:?}").into_bytes()],
    );
    message.replace(&path.display().to_string(), "PATH")
}

/// Fails if logs or errors repeat the known key, or a line of a file's content that could
/// carry one (a base64 or hex line of 16 characters or more).
fn assert_nothing_repeated(file: &Snapshot, said: &[Vec<u8>]) {
    let content = file.content().unwrap_or_default();
    let content = String::from_utf8_lossy(content);
    for haystack in said {
        assert_no_secret(haystack, &known_key().to_bytes(), "logs or an error");
        let haystack = String::from_utf8_lossy(haystack);
        for line in content.lines().map(str::trim) {
            let secret_like = line.len() >= 16 && !line.starts_with("-----");
            assert!(
                !secret_like || !haystack.contains(line),
                "logs or an error repeat the file's line {line}"
            );
        }
    }
}

fn invalid(problem: KeyProblem) -> impl Fn(&Error) -> bool {
    move |err| matches!(err, Error::InvalidKey { problem: p, .. } if *p == problem)
}

/// PEM of a kind the crate names when it knows it (`None`: the file's words are not
/// repeated).
fn other_pem(label: Option<&'static str>) -> KeyProblem {
    KeyProblem::OtherPem { label }
}

/// A key of an algorithm the crate names when it knows it.
fn other_algorithm(algorithm: Option<&'static str>) -> KeyProblem {
    KeyProblem::OtherAlgorithm { algorithm }
}

/// Bytes that look random: neither UTF-8 nor DER, and the same in every run.
fn noise(len: usize) -> Vec<u8> {
    let mut bytes = Rng::fixed().bytes(len);
    bytes[0] = 0xff;
    bytes
}

/// An OpenSSH private key file whose public part names `key_type`: all that is read
/// before the type is refused.
fn openssh_with_key_type(key_type: &[u8]) -> Vec<u8> {
    let string = |bytes: &[u8]| [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat();
    let public = [string(key_type), string(&[7; 32])].concat();
    let blob = [
        &b"openssh-key-v1\0"[..],
        &string(b"none"),
        &string(b"none"),
        &string(b""),
        &1u32.to_be_bytes(),
        &string(&public),
    ]
    .concat();
    format!(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
        data_encoding::BASE64.encode(&blob)
    )
    .into_bytes()
}

/// Each bad content, the problem it must be reported as.
fn bad_contents() -> Vec<(&'static str, Vec<u8>, KeyProblem)> {
    let key = known_key();
    let signing_key = SigningKey::from_bytes(&key.to_bytes());
    let good_pem = signing_key
        .to_pkcs8_pem(Default::default())
        .expect("pem")
        .to_string();
    let good_der = signing_key.to_pkcs8_der().expect("der").as_bytes().to_vec();

    let truncated_pem = good_pem.as_bytes()[..good_pem.len() / 2].to_vec();
    // Changing one base64 character of the secret key part gives another secret key,
    // which no longer matches the public key beside it.
    let mut flipped_pem = good_pem.clone().into_bytes();
    let secret_char = "-----BEGIN PRIVATE KEY-----\n".len() + 30;
    flipped_pem[secret_char] = if flipped_pem[secret_char] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let mismatched = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: Some(PublicKeyBytes(
            *SecretKey::from_bytes(&[1; 32]).public().as_bytes(),
        )),
    }
    .to_pkcs8_pem(Default::default())
    .expect("pem")
    .as_bytes()
    .to_vec();
    // An OpenSSH key cut after two of its 70-character lines (a whole number of base64
    // groups, so only the structure inside is short).
    let openssh = encode_key(&key, KeyFormat::OpenSsh);
    let openssh = String::from_utf8_lossy(&openssh).into_owned();
    let lines: Vec<&str> = openssh.lines().collect();
    let truncated_openssh = [lines[0], lines[1], lines[2], lines[lines.len() - 1], ""]
        .join("\n")
        .into_bytes();
    let mut truncated_der = good_der.clone();
    truncated_der.truncate(good_der.len() - 5);
    let mut noisy_der = noise(48);
    noisy_der[0] = 0x30;
    let damaged = |format| KeyProblem::Damaged { format };

    vec![
        ("empty", vec![], KeyProblem::Empty),
        ("only white space", b" \n\t\n".to_vec(), KeyProblem::Empty),
        ("1 byte", vec![7], KeyProblem::UnknownFormat { len: 1 }),
        (
            "31 bytes",
            vec![0xaa; 31],
            KeyProblem::UnknownFormat { len: 31 },
        ),
        (
            "33 bytes",
            vec![0xaa; 33],
            KeyProblem::UnknownFormat { len: 33 },
        ),
        (
            "64 binary bytes",
            vec![0xff; 64],
            KeyProblem::UnknownFormat { len: 64 },
        ),
        (
            "65 bytes of hex digits",
            vec![b'a'; 65],
            KeyProblem::UnknownFormat { len: 65 },
        ),
        (
            "63 bytes of hex digits",
            vec![b'a'; 63],
            KeyProblem::UnknownFormat { len: 63 },
        ),
        (
            "300 random bytes",
            noise(300),
            KeyProblem::UnknownFormat { len: 300 },
        ),
        (
            "random bytes after a DER SEQUENCE tag",
            noisy_der,
            damaged(KeyFormat::Pkcs8Der),
        ),
        (
            "text",
            b"my endpoint key\n".to_vec(),
            KeyProblem::UnknownFormat { len: 16 },
        ),
        (
            "not UTF-8",
            b"\xc3\x28 key \xff".to_vec(),
            KeyProblem::UnknownFormat { len: 8 },
        ),
        (
            "64 non-hex characters",
            vec![b'z'; 64],
            KeyProblem::InvalidText {
                format: KeyFormat::Hex,
            },
        ),
        (
            "52 non-base32 characters",
            vec![b'1'; 52],
            KeyProblem::InvalidText {
                format: KeyFormat::Base32,
            },
        ),
        ("truncated PEM", truncated_pem, damaged(KeyFormat::Pkcs8Pem)),
        (
            "bit-flipped PEM",
            flipped_pem,
            KeyProblem::PublicKeyMismatch,
        ),
        (
            "PKCS#8 with another public key",
            mismatched,
            KeyProblem::PublicKeyMismatch,
        ),
        ("truncated DER", truncated_der, damaged(KeyFormat::Pkcs8Der)),
        (
            "truncated OpenSSH key",
            truncated_openssh,
            damaged(KeyFormat::OpenSsh),
        ),
        (
            "RSA, openssl genpkey",
            include_bytes!("../corpus/rsa-pkcs8.pem").to_vec(),
            other_algorithm(Some("RSA")),
        ),
        (
            "RSA, openssl genrsa -traditional",
            include_bytes!("../corpus/rsa-traditional.pem").to_vec(),
            other_pem(Some("RSA PRIVATE KEY")),
        ),
        (
            "P-256, openssl genpkey",
            include_bytes!("../corpus/p256-pkcs8.pem").to_vec(),
            other_algorithm(Some("elliptic-curve (ECDSA)")),
        ),
        (
            "P-256, openssl ecparam",
            include_bytes!("../corpus/p256-sec1.pem").to_vec(),
            other_pem(Some("EC PRIVATE KEY")),
        ),
        (
            "X25519, openssl genpkey",
            include_bytes!("../corpus/x25519.pem").to_vec(),
            other_algorithm(Some("X25519")),
        ),
        (
            "Ed448, openssl genpkey",
            include_bytes!("../corpus/ed448.pem").to_vec(),
            other_algorithm(Some("Ed448")),
        ),
        (
            "encrypted Ed25519 PKCS#8, openssl genpkey -aes-256-cbc",
            include_bytes!("../corpus/ed25519-encrypted.pem").to_vec(),
            KeyProblem::Encrypted,
        ),
        (
            "Ed25519 public key, openssl pkey -pubout",
            include_bytes!("../corpus/ed25519-public.pem").to_vec(),
            KeyProblem::PublicKey,
        ),
        (
            "OpenSSH RSA key, ssh-keygen -t rsa",
            include_bytes!("../corpus/openssh-rsa").to_vec(),
            other_algorithm(Some("RSA")),
        ),
        (
            "encrypted OpenSSH Ed25519 key, ssh-keygen -N",
            include_bytes!("../corpus/openssh-ed25519-encrypted").to_vec(),
            KeyProblem::Encrypted,
        ),
        (
            "OpenSSH public key (.pub), ssh-keygen",
            include_bytes!("../corpus/openssh-rsa-public").to_vec(),
            KeyProblem::PublicKey,
        ),
        (
            "a PEM armour line cut to 32 bytes",
            b"-----BEGIN PRIVATE KEY-----\nMFEC".to_vec(),
            damaged(KeyFormat::Pkcs8Pem),
        ),
        (
            "31 hex digits and a newline (32 bytes)",
            format!("{}\n", &HEXLOWER.encode(&key.to_bytes())[..31]).into_bytes(),
            KeyProblem::AmbiguousText,
        ),
        (
            "32 characters of a base32 key",
            BASE32_NOPAD.encode(&key.to_bytes()).as_bytes()[..32].to_vec(),
            KeyProblem::AmbiguousText,
        ),
        (
            "a 32-character password",
            b"correct horse battery staple 42!".to_vec(),
            KeyProblem::AmbiguousText,
        ),
        (
            "hex with 0x in front",
            format!("0x{}\n", HEXLOWER.encode(&key.to_bytes())).into_bytes(),
            KeyProblem::HexPrefix,
        ),
        (
            "an OpenSSH key whose key type holds terminal escapes",
            openssh_with_key_type(b"ssh-\x1b]0;owned\x07\x1b[2J"),
            other_algorithm(None),
        ),
        (
            "a PEM label with a terminal escape",
            b"-----BEGIN \x1b[31mKEY-----\nAAAA\n-----END \x1b[31mKEY-----\n".to_vec(),
            other_pem(None),
        ),
        (
            "certificate",
            b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n"
                .to_vec(),
            other_pem(Some("CERTIFICATE")),
        ),
    ]
}

#[test]
fn a_damaged_or_foreign_key_file_is_an_error_and_stays_byte_identical() {
    let cases = bad_contents();
    let mut problems = Vec::new();
    for (name, content, problem) in &cases {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        write_private(&path, content);
        let message = assert_refused_unchanged(&path, invalid(problem.clone()));
        assert!(
            !message.chars().any(char::is_control),
            "{name}: the message echoes control characters: {message:?}"
        );
        figure("hostile case", format_args!("{name}: {message}"));
        if !problems.contains(problem) {
            problems.push(problem.clone());
        }
    }
    figure(
        "hostile",
        format_args!(
            "{} bad contents: {} different problems, each error naming the path, 0 panics, \
             0 files changed",
            cases.len(),
            problems.len()
        ),
    );
}

#[test]
fn a_huge_file_is_refused_without_being_read() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, b"");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)?
        .set_len(1 << 30)?;
    let start = Instant::now();
    let message = assert_refused_unchanged(&path, invalid(KeyProblem::TooLarge { len: 1 << 30 }));
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    figure(
        "hostile case",
        format_args!("1 GiB sparse file, refused in {took:?}: {message}"),
    );
    Ok(())
}

#[test]
fn a_directory_at_the_key_path_is_an_error() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    fs::create_dir(&path)?;
    let message = assert_refused_unchanged(&path, |err| {
        matches!(
            err,
            Error::NotAFile {
                kind: FileKind::Directory,
                ..
            }
        )
    });
    figure("hostile case", format_args!("a directory: {message}"));
    Ok(())
}

// Windows keeps its named pipes out of the file system (`\\.\pipe\`).
#[test]
#[cfg(unix)]
fn a_fifo_at_the_key_path_is_an_error_and_does_not_hang() -> anyhow::Result<()> {
    use std::{ffi::CString, os::unix::ffi::OsStrExt, sync::mpsc};

    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let (done, finished) = mpsc::channel();
    let checked = path.clone();
    std::thread::spawn(move || {
        let message =
            assert_refused_unchanged(&checked, |err| matches!(err, Error::NotAFile { .. }));
        done.send(message).expect("report");
    });
    let message = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("opening a FIFO hung or failed");
    figure("hostile case", format_args!("a FIFO: {message}"));
    Ok(())
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine 8 makes no symbolic links: CreateSymbolicLinkW succeeds and creates nothing"
)]
fn a_dangling_symlink_is_an_error_and_nothing_is_created_through_it() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let target = dir.path().join("missing-volume").join("endpoint.key");
    symlink(&target, &path)?;
    let message =
        assert_refused_unchanged(&path, |err| matches!(err, Error::DanglingSymlink { .. }));
    assert!(!target.parent().expect("parent").exists());
    figure(
        "hostile case",
        format_args!("a dangling symlink: {message}"),
    );
    Ok(())
}

// Another user, for whom the key's mode applies.
#[test]
#[cfg(unix)]
fn an_unreadable_key_is_an_error_naming_the_path_and_stays() {
    if !is_root() {
        eprintln!("skipped: needs a file that the child's user cannot read");
        return;
    }
    let key = ReadOnlyKey::new(0o600, Some(0));
    let before = key.state();
    let outcome = run_to_end(key.child(crate::support::child::Action::Open));
    let error = outcome.expect_error();
    assert!(error.contains(&key.path.display().to_string()), "{error}");
    assert!(error.contains("cannot open key file"), "{error}");
    assert_eq!(key.state(), before);
    let message = error.replace(&key.path.display().to_string(), "PATH");
    figure(
        "hostile case",
        format_args!("a key the process may not read: {message}"),
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine 8 makes no symbolic links: CreateSymbolicLinkW succeeds and creates nothing"
)]
fn a_symlink_to_a_key_is_followed() -> anyhow::Result<()> {
    // As in a Kubernetes secret mount: `endpoint.key -> ..data/endpoint.key`.
    let dir = temp_dir();
    fs::create_dir(dir.path().join("..data"))?;
    let target = dir.path().join("..data").join("endpoint.key");
    write_private(&target, &known_key().to_bytes());
    let path = dir.path().join("endpoint.key");
    symlink(&target, &path)?;
    assert_eq!(load_key(&path)?.public(), known_key().public());
    Ok(())
}
