//! Guarantee 2: an existing key file is never overwritten, replaced or deleted. Whatever
//! is wrong with it is an error that names the path, and the file stays byte-identical.

use std::{
    ffi::CString,
    fs,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::Path,
    sync::mpsc,
    time::{Duration, Instant, SystemTime},
};

use ed25519_dalek::{
    SigningKey,
    ed25519::pkcs8::{EncodePrivateKey, KeypairBytes, PublicKeyBytes},
};
use iroh::SecretKey;
use iroh_identity::{Error, KeyProblem, load_or_generate};

use crate::support::{builder, known_key, temp_dir, write_private};

/// Everything about what is at a path that a rewrite, replacement or deletion would change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    file_type: fs::FileType,
    inode: u64,
    modified: SystemTime,
    mode: u32,
    content: Option<Vec<u8>>,
    link_target: Option<std::path::PathBuf>,
}

fn snapshot(path: &Path) -> Snapshot {
    let metadata = fs::symlink_metadata(path).expect("something is at the path");
    let file_type = metadata.file_type();
    Snapshot {
        file_type,
        inode: metadata.ino(),
        modified: metadata.modified().expect("mtime"),
        mode: metadata.mode(),
        // Read only small regular files: the sparse case must not be read whole here either.
        content: (file_type.is_file() && metadata.len() < 1 << 20)
            .then(|| fs::read(path).expect("read")),
        link_target: file_type
            .is_symlink()
            .then(|| fs::read_link(path).expect("readlink")),
    }
}

/// Opens `path` both ways (key only, and endpoint), checks that each fails as `expected`
/// says with the path in the message, and that the path is untouched.
fn assert_refused_unchanged(path: &Path, expected: impl Fn(&Error) -> bool) {
    let before = snapshot(path);
    let key_only = load_or_generate(path).map(|_| ());
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
    assert_eq!(snapshot(path), before, "{} was changed", path.display());
    let dir = path.parent().expect("parent");
    assert_eq!(
        crate::support::list(dir),
        [path.file_name().expect("name").to_string_lossy()]
    );
}

fn invalid(problem: KeyProblem) -> impl Fn(&Error) -> bool {
    move |err| matches!(err, Error::InvalidKey { problem: p, .. } if *p == problem)
}

fn pem(label: &str, body: &str) -> Vec<u8> {
    format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n").into_bytes()
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
    // The same structure with the X25519 algorithm (1.3.101.110) instead of Ed25519 (…112).
    let ed25519_oid = [0x06, 0x03, 0x2b, 0x65, 0x70];
    let at = good_der
        .windows(ed25519_oid.len())
        .position(|window| window == ed25519_oid)
        .expect("the Ed25519 OID is in the DER");
    let mut x25519_der = good_der.clone();
    x25519_der[at + 4] = 0x6e;
    let mut truncated_der = good_der.clone();
    truncated_der.truncate(good_der.len() - 5);

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
            "65 hex characters",
            vec![b'a'; 65],
            KeyProblem::UnknownFormat { len: 65 },
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
            KeyProblem::InvalidText { encoding: "hex" },
        ),
        (
            "52 non-base32 characters",
            vec![b'1'; 52],
            KeyProblem::InvalidText { encoding: "base32" },
        ),
        (
            "truncated PEM",
            truncated_pem,
            KeyProblem::Damaged {
                format: "PKCS#8 PEM",
            },
        ),
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
        (
            "truncated DER",
            truncated_der,
            KeyProblem::Damaged {
                format: "PKCS#8 DER",
            },
        ),
        (
            "X25519 PKCS#8",
            x25519_der,
            KeyProblem::OtherAlgorithm {
                algorithm: "X25519".into(),
            },
        ),
        (
            "encrypted PKCS#8",
            pem("ENCRYPTED PRIVATE KEY", "MIIBXTBXBgkqhkiG9w0BBQ0w"),
            KeyProblem::Encrypted,
        ),
        (
            "OpenSSH key",
            pem("OPENSSH PRIVATE KEY", "b3BlbnNzaC1rZXktdjEAAAAA"),
            KeyProblem::OpenSsh,
        ),
        (
            "RSA key",
            pem("RSA PRIVATE KEY", "MIIEowIBAAKCAQEA"),
            KeyProblem::OtherPem {
                label: "RSA PRIVATE KEY".into(),
            },
        ),
        (
            "certificate",
            pem("CERTIFICATE", "MIIBszCCAVmgAwIBAgIU"),
            KeyProblem::OtherPem {
                label: "CERTIFICATE".into(),
            },
        ),
    ]
}

#[test]
fn a_damaged_or_foreign_key_file_is_an_error_and_stays_byte_identical() {
    for (name, content, problem) in bad_contents() {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        write_private(&path, &content);
        eprintln!("case: {name}");
        assert_refused_unchanged(&path, invalid(problem));
    }
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
    assert_refused_unchanged(&path, invalid(KeyProblem::TooLarge { len: 1 << 30 }));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

#[test]
fn a_directory_at_the_key_path_is_an_error() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    fs::create_dir(&path)?;
    assert_refused_unchanged(&path, |err| {
        matches!(
            err,
            Error::NotAFile {
                kind: "a directory",
                ..
            }
        )
    });
    Ok(())
}

#[test]
fn a_fifo_at_the_key_path_is_an_error_and_does_not_hang() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
    let (done, finished) = mpsc::channel();
    let checked = path.clone();
    std::thread::spawn(move || {
        assert_refused_unchanged(&checked, |err| matches!(err, Error::NotAFile { .. }));
        done.send(()).expect("report");
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("opening a FIFO hung or failed");
    Ok(())
}

#[test]
fn a_dangling_symlink_is_an_error_and_nothing_is_created_through_it() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let target = dir.path().join("missing-volume").join("endpoint.key");
    std::os::unix::fs::symlink(&target, &path)?;
    assert_refused_unchanged(&path, |err| matches!(err, Error::DanglingSymlink { .. }));
    assert!(!target.parent().expect("parent").exists());
    Ok(())
}

#[test]
fn a_symlink_to_a_key_is_followed() -> anyhow::Result<()> {
    // As in a Kubernetes secret mount: `endpoint.key -> ..data/endpoint.key`.
    let dir = temp_dir();
    fs::create_dir(dir.path().join("..data"))?;
    let target = dir.path().join("..data").join("endpoint.key");
    write_private(&target, &known_key().to_bytes());
    let path = dir.path().join("endpoint.key");
    std::os::unix::fs::symlink(&target, &path)?;
    assert_eq!(load_or_generate(&path)?.public(), known_key().public());
    Ok(())
}
