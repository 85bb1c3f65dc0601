//! The `iroh-identity` key tool, run as a process: every command, its output and its exit
//! code, and that only `export` prints a secret.

#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::{
    fs,
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use iroh_identity::{KeyFormat, decode_key, encode_key, load_key};

use crate::support::{assert_no_secret, builder, new_key_file, temp_dir, write_private};

/// Runs the tool with `args`, feeding it `stdin`.
fn tool(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iroh-identity"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run iroh-identity");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for iroh-identity")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// Its one line of stdout; fails unless it succeeded.
fn one_line(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout.clone()).expect("UTF-8");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    stdout.trim_end().to_owned()
}

/// Checks a failure's exit code, and that stderr names `path` in one line.
fn assert_fails(output: &Output, code: i32, path: &Path) {
    assert_eq!(output.status.code(), Some(code), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn generate_id_and_a_refused_overwrite() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let generated = tool(&["generate", path_str(&path)], b"");
    let id = one_line(&generated);
    let key = load_key(&path)?;
    assert_eq!(id, key.public().to_string());
    #[cfg(unix)]
    assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
    assert_eq!(decode_key(&fs::read(&path)?)?.1, KeyFormat::Pkcs8Pem);
    assert_eq!(one_line(&tool(&["id", path_str(&path)], b"")), id);

    let before = fs::read(&path)?;
    assert_fails(&tool(&["generate", path_str(&path)], b""), 3, &path);
    assert_eq!(fs::read(&path)?, before);

    let missing = dir.path().join("missing.key");
    assert_fails(&tool(&["id", path_str(&missing)], b""), 1, &missing);
    assert!(!missing.exists(), "id created a key");

    for (format, expected) in [
        ("openssh", KeyFormat::OpenSsh),
        ("raw", KeyFormat::Raw),
        ("hex", KeyFormat::Hex),
    ] {
        let path = dir.path().join(format);
        let id = one_line(&tool(
            &["generate", path_str(&path), "--format", format],
            b"",
        ));
        let content = fs::read(&path)?;
        let (key, read_as) = decode_key(&content)?;
        assert_eq!((read_as, key.public().to_string()), (expected, id));
    }
    Ok(())
}

#[test]
fn convert_writes_every_format_and_never_over_a_file() -> anyhow::Result<()> {
    let dir = temp_dir();
    let input = dir.path().join("endpoint.key");
    let key = new_key_file(&input);
    let id = key.public().to_string();
    for format in [
        "pkcs8", "pkcs8-v1", "der", "openssh", "raw", "hex", "base32",
    ] {
        let output = dir.path().join(format!("converted.{format}"));
        let converted = tool(
            &[
                "convert",
                path_str(&input),
                path_str(&output),
                "--format",
                format,
            ],
            b"",
        );
        assert_eq!(one_line(&converted), id, "{format}");
        assert_eq!(load_key(&output)?.public(), key.public(), "{format}");
        assert_no_secret(&converted.stdout, &key.to_bytes(), "convert's output");
    }
    let taken = dir.path().join("converted.hex");
    let refused = tool(
        &[
            "convert",
            path_str(&input),
            path_str(&taken),
            "--format",
            "hex",
        ],
        b"",
    );
    assert_fails(&refused, 3, &taken);
    Ok(())
}

#[test]
fn import_stores_a_key_from_stdin() -> anyhow::Result<()> {
    let dir = temp_dir();
    let key = iroh::SecretKey::generate();
    for (name, format) in [
        ("hex", KeyFormat::Hex),
        ("base32", KeyFormat::Base32),
        ("pem", KeyFormat::Pkcs8PemV1),
        ("openssh", KeyFormat::OpenSsh),
    ] {
        let path = dir.path().join(name);
        let imported = tool(&["import", path_str(&path)], &encode_key(&key, format));
        assert_eq!(one_line(&imported), key.public().to_string(), "{name}");
        assert_eq!(decode_key(&fs::read(&path)?)?.1, KeyFormat::Pkcs8Pem);
        assert_eq!(load_key(&path)?.to_bytes(), key.to_bytes());
        assert_no_secret(&imported.stdout, &key.to_bytes(), "import's output");
        assert_no_secret(&imported.stderr, &key.to_bytes(), "import's output");
    }
    let path = dir.path().join("garbage");
    let refused = tool(&["import", path_str(&path)], b"not a key\n");
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stdin is not a key"));
    assert!(!path.exists());
    Ok(())
}

#[tokio::test]
async fn inspect_tells_format_id_permissions_and_use() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let key = iroh::SecretKey::generate();
    write_private(&path, &encode_key(&key, KeyFormat::OpenSsh));
    let report = |output: Output| {
        assert!(output.status.success(), "{output:?}");
        assert_no_secret(&output.stdout, &key.to_bytes(), "inspect's output");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let args = ["inspect", path_str(&path)];
    let free = report(tool(&args, b""));
    for line in [
        format!("path: {}", path.display()),
        "format: OpenSSH".to_owned(),
        format!("endpoint id: {}", key.public()),
        #[cfg(unix)]
        format!("permissions: 0600, owner uid {}: private", uid(&path)),
        #[cfg(windows)]
        "permissions: private".to_owned(),
        "in use: no".to_owned(),
    ] {
        assert!(
            free.lines().any(|l| l == line),
            "{line:?} missing in\n{free}"
        );
    }

    let endpoint = builder(&path).bind().await?;
    let held = report(tool(&args, b""));
    assert!(held.contains("in use: yes"), "{held}");
    endpoint.close().await;

    // Windows: `windows::the_key_tool_tells_a_key_others_may_read_with_its_fix`.
    #[cfg(unix)]
    {
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        let exposed = report(tool(&args, b""));
        assert!(exposed.contains("permissions: 0644"), "{exposed}");
        assert!(exposed.contains(": EXPOSED: key file"), "{exposed}");
        assert!(exposed.contains("(mode 0644)"), "{exposed}");
        assert!(
            exposed.contains(&format!("chmod 600 {}", path.display())),
            "{exposed}"
        );
    }
    Ok(())
}

#[cfg(unix)]
fn uid(path: &Path) -> u32 {
    std::os::unix::fs::MetadataExt::uid(&fs::metadata(path).expect("metadata"))
}

#[test]
fn export_prints_the_key_in_the_format_asked_for() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let key = new_key_file(&path);
    for (format, expected) in [
        ("hex", KeyFormat::Hex),
        ("base32", KeyFormat::Base32),
        ("openssh", KeyFormat::OpenSsh),
        ("pkcs8", KeyFormat::Pkcs8Pem),
        ("pkcs8-v1", KeyFormat::Pkcs8PemV1),
    ] {
        let exported = tool(&["export", path_str(&path), "--format", format], b"");
        assert!(exported.status.success(), "{exported:?}");
        assert_eq!(exported.stdout, *encode_key(&key, expected), "{format}");
    }
    let refused = tool(&["export", path_str(&path), "--format", "raw"], b"");
    assert_eq!(
        refused.status.code(),
        Some(2),
        "binary formats are not printed"
    );
    let usage = tool(&["export", path_str(&path)], b"");
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    Ok(())
}

// Another user (root gives it the file); Windows: `windows.rs`.
#[test]
#[cfg(unix)]
fn inspect_labels_a_readable_key_of_another_user_as_exposed() -> anyhow::Result<()> {
    if !crate::support::is_root() {
        eprintln!("skipped: only root can give a file to another user");
        return Ok(());
    }
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(
        &path,
        &encode_key(&iroh::SecretKey::generate(), KeyFormat::Pkcs8Pem),
    );
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    let nobody = crate::support::NOBODY;
    std::os::unix::fs::chown(&path, Some(nobody), Some(nobody))?;
    let output = tool(&["inspect", path_str(&path)], b"");
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8(output.stdout)?;
    assert!(
        report.contains(&format!("permissions: 0644, owner uid {nobody}: EXPOSED:")),
        "{report}"
    );
    assert!(report.contains("belongs to uid 65534"), "{report}");
    Ok(())
}

// Locks the key file as an opener once did; Windows's locks are mandatory, so there a
// locked key file could not even be read.
#[test]
#[cfg(unix)]
fn inspect_never_takes_the_lock_so_an_open_that_does_not_wait_never_fails_for_it()
-> anyhow::Result<()> {
    use std::{
        fs::TryLockError,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
    };

    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    new_key_file(&path);
    // What an open with `lock_wait(ZERO)` does at its lock step, as fast as it can.
    let (stop, refused, tries) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let opener = {
        let (stop, refused, tries) = (stop.clone(), refused.clone(), tries.clone());
        let file = fs::File::open(&path)?;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tries.fetch_add(1, Ordering::Relaxed);
                match file.try_lock() {
                    Ok(()) => file.unlock().expect("unlock"),
                    Err(TryLockError::WouldBlock) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TryLockError::Error(err)) => panic!("{err}"),
                }
            }
        })
    };
    // The opener stops on every way out of the test, a failed assertion included.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stopping = Stop(stop);
    let runs = 100;
    for _ in 0..runs {
        let output = tool(&["inspect", path_str(&path)], b"");
        assert!(output.status.success(), "{output:?}");
    }
    drop(stopping);
    opener.join().expect("the opener");
    assert_eq!(
        refused.load(Ordering::Relaxed),
        0,
        "{runs} inspections made the lock busy ({} tries)",
        tries.load(Ordering::Relaxed)
    );
    let after = String::from_utf8(tool(&["inspect", path_str(&path)], b"").stdout)?;
    assert!(after.contains("in use: no"), "{after}");
    Ok(())
}

#[test]
fn inspect_reads_a_bounded_amount_and_never_hangs() -> anyhow::Result<()> {
    let dir = temp_dir();
    // A 1 GiB sparse file and a FIFO that no one writes: refused at once, unread.
    let huge = dir.path().join("huge.key");
    write_private(&huge, b"");
    fs::OpenOptions::new()
        .write(true)
        .open(&huge)?
        .set_len(1 << 30)?;
    #[cfg_attr(windows, allow(unused_mut))]
    let mut cases = vec![(huge, "too large to be a key")];
    // Windows keeps its named pipes out of the file system.
    #[cfg(unix)]
    {
        let fifo = dir.path().join("fifo.key");
        let status = Command::new("mkfifo").arg(&fifo).status()?;
        assert!(status.success());
        cases.push((fifo, "not a regular file"));
    }
    for (path, says) in &cases {
        let start = std::time::Instant::now();
        let output = tool(&["inspect", path_str(path)], b"");
        assert!(
            start.elapsed() < std::time::Duration::from_secs(2),
            "{path:?}"
        );
        assert_fails(&output, 1, path);
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(says),
            "{output:?}"
        );
    }
    Ok(())
}
