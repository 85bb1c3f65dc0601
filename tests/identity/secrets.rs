//! Guarantee 8: no key material in any error, `Debug` output or log line, at any level.

use std::{fs, time::Duration};

use ed25519_dalek::ed25519::pkcs8::{EncodePrivateKey, KeypairBytes, PublicKeyBytes};
use iroh::SecretKey;
use iroh_identity::{Identity, KeyFormat, load_key};

use crate::support::{
    LogCapture, assert_no_secret, builder,
    child::{Action, Task, run_to_end},
    temp_dir, write_private,
};

#[tokio::test]
async fn no_key_material_in_logs_errors_or_debug_output() -> anyhow::Result<()> {
    let (logs, _guard) = LogCapture::start();

    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let builder = || builder(&path).lock_wait(Duration::from_millis(50));
    let mut said = String::new();

    // Generate, load, wait for the lock and fail, release, load again.
    let endpoint = builder().bind().await?;
    said += &format!("{:?}\n", builder());
    let in_use = builder().bind().await.expect_err("in use");
    said += &format!("{in_use}\n{in_use:?}\n");
    endpoint.close().await;
    let endpoint = builder().bind().await?;
    let lock_dir = temp_dir();
    let lock_path = lock_dir.path().join("endpoint.key");
    let identity = Identity::open(&lock_path).await?;
    said += &format!("{identity:?}\n");
    endpoint.close().await;

    // A damaged file that holds a real secret: the error must not repeat it.
    let damaged_secret = [0x5a; 32];
    let damaged = KeypairBytes {
        secret_key: damaged_secret,
        public_key: Some(PublicKeyBytes(
            *SecretKey::from_bytes(&[1; 32]).public().as_bytes(),
        )),
    }
    .to_pkcs8_pem(Default::default())?;
    let damaged_path = dir.path().join("damaged.key");
    write_private(&damaged_path, damaged.as_bytes());
    let err = load_key(&damaged_path).expect_err("mismatch");
    said += &format!("{err}\n{err:?}\n{}\n", crate::support::child::chain(&err));
    let raw_path = dir.path().join("raw.key");
    write_private(&raw_path, &[0x5a; 31]);
    let err = load_key(&raw_path).expect_err("wrong size");
    said += &format!("{err}\n{err:?}\n{}\n", crate::support::child::chain(&err));

    let secret = load_key(&path)?.to_bytes();
    let lock_secret = load_key(&lock_path)?.to_bytes();
    let logs = logs.bytes();
    assert!(logs.len() > 1000, "TRACE logging was not captured");
    let logs_text = String::from_utf8_lossy(&logs);
    assert!(
        logs_text.contains("generated a new endpoint key"),
        "{logs_text}"
    );
    assert!(logs_text.contains("waiting for it to close"), "{logs_text}");
    for (what, haystack) in [
        ("the logs", &logs),
        ("errors and Debug output", &said.clone().into_bytes()),
    ] {
        assert_no_secret(haystack, &secret, what);
        assert_no_secret(haystack, &lock_secret, what);
        assert_no_secret(haystack, &damaged_secret, what);
    }
    drop(identity);
    Ok(())
}

#[test]
#[cfg(all(feature = "keyring", any(target_os = "linux", windows)))]
fn no_key_material_from_the_keychain_in_logs_or_errors() {
    use iroh_identity::decode_key;

    let service = crate::keychain::Store::start();
    let child = |entry: &str, action: Action| {
        let mut command = Task::new(action, "/nonexistent/unused.key")
            .keychain(entry, "endpoint")
            .lock_wait_ms(50)
            .trace()
            .command();
        service.env(&mut command);
        run_to_end(command)
    };
    // Created, then loaded, each with TRACE logs of the crate, zbus and iroh.
    let created = child("chat", Action::Open);
    let loaded = child("chat", Action::Open);
    let (key, _) = decode_key(&service.lookup("chat", "endpoint").expect("stored")).expect("a key");
    assert_eq!(loaded.expect_id(), key.public().to_string());
    assert!(
        created
            .stderr
            .contains("generated a new endpoint key in the keychain"),
        "TRACE logging was not captured: {created}"
    );
    for outcome in [&created, &loaded] {
        outcome.assert_no_secret(&key);
    }

    // An entry that holds a real secret with the wrong public half: the error, in the
    // child's report and its logs, must not repeat it.
    let damaged_secret = [0x5a; 32];
    let damaged = KeypairBytes {
        secret_key: damaged_secret,
        public_key: Some(PublicKeyBytes(
            *SecretKey::from_bytes(&[1; 32]).public().as_bytes(),
        )),
    }
    .to_pkcs8_pem(Default::default())
    .expect("encode");
    service.store("damaged", "endpoint", damaged.as_bytes());
    let refused = child("damaged", Action::Open);
    assert!(
        refused.expect_error().contains("not a usable Ed25519 key"),
        "{refused}"
    );
    refused.assert_no_secret(&SecretKey::from_bytes(&damaged_secret));

    // Every damaged form of the PEM an entry holds: pasted onto one line, cut short, a
    // line lost. The error, in the child's report and its TRACE logs, repeats none of it.
    let stored = SecretKey::generate();
    let pem = iroh_identity::encode_key(&stored, KeyFormat::Pkcs8Pem);
    let mut refused = 0;
    for (index, (_, form)) in damaged_forms(&pem).into_iter().enumerate() {
        if form.contains(&0) || std::str::from_utf8(&form).is_err() {
            continue;
        }
        let entry = format!("damaged-{index}");
        service.store(&entry, "endpoint", &form);
        let outcome = child(&entry, Action::Open);
        refused += usize::from(outcome.error().is_some());
        outcome.assert_no_secret(&stored);
    }
    assert!(refused > 5, "only {refused} damaged entries were refused");
}

/// What pasting, a crash or a bad copy make of a key's `content`: each with a name.
fn damaged_forms(content: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut forms = Vec::new();
    let len = content.len();
    for cut in [1, len / 4, len / 2, len * 3 / 4, len - 1] {
        forms.push((format!("cut at {cut} bytes"), content[..cut].to_vec()));
    }
    for at in [len / 3, len / 2, len - 2] {
        let mut flipped = content.to_vec();
        flipped[at] ^= 0x01;
        forms.push((format!("byte {at} flipped"), flipped));
    }
    forms.push(("a byte more".into(), [content, b"!"].concat()));
    if let Ok(text) = std::str::from_utf8(content) {
        let text = text.trim_end();
        for (name, joint) in [("spaces", " "), ("carriage returns", "\r"), ("nothing", "")] {
            let joined = text.lines().collect::<Vec<_>>().join(joint);
            forms.push((format!("line breaks made {name}"), joined.into_bytes()));
        }
        let lines: Vec<&str> = text.lines().collect();
        for skipped in 0..lines.len() {
            let mut kept = lines.clone();
            kept.remove(skipped);
            forms.push((format!("line {skipped} lost"), kept.join("\n").into_bytes()));
        }
        if lines.len() > 2 {
            // The body run into the armour's label, as a bad paste leaves it.
            let label = format!("-----BEGIN {}-----\n", lines[1]);
            let rest = lines[2..].join("\n");
            forms.push(("the body in the label".into(), (label + &rest).into_bytes()));
        }
    }
    forms
}

#[test]
fn no_key_material_in_any_refusal_of_a_damaged_key() -> anyhow::Result<()> {
    let key = SecretKey::generate();
    let secret = key.to_bytes();
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let (mut refused, mut read) = (0, 0);
    for format in crate::support::ALL_FORMATS {
        let content = iroh_identity::encode_key(&key, format);
        for (name, form) in damaged_forms(&content) {
            let what = format!("{format}, {name}");
            // In memory, and as a key file: the error, its causes and its Debug output.
            if let Err(problem) = iroh_identity::decode_key(&form) {
                let said = format!("{problem}\n{problem:?}");
                assert_no_secret(said.as_bytes(), &secret, &what);
            }
            write_private(&path, &form);
            match load_key(&path) {
                Ok(_) => read += 1,
                Err(err) => {
                    refused += 1;
                    let said = format!("{}\n{err:?}", crate::support::child::chain(&err));
                    assert_no_secret(said.as_bytes(), &secret, &what);
                }
            }
            fs::remove_file(&path)?;
        }
    }
    assert!(refused > 50, "only {refused} damaged forms were refused");
    crate::campaigns::figure(
        "secrets",
        format_args!(
            "{refused} damaged forms of a key in every format refused without a piece of it \
             in the error, its causes or its Debug output ({read} still read as a key)"
        ),
    );
    Ok(())
}

#[test]
fn no_key_material_from_a_damaged_environment_variable() {
    let key = SecretKey::generate();
    let mut tried = 0;
    for format in [KeyFormat::Hex, KeyFormat::Base32] {
        let content = iroh_identity::encode_key(&key, format);
        for (_, form) in damaged_forms(&content) {
            let Ok(value) = String::from_utf8(form) else {
                continue;
            };
            if value.contains('\0') {
                continue;
            }
            let mut task = Task::new(Action::Open, "/nonexistent/unused.key").trace();
            task.key_env = Some("TEST_IROH_SECRET".to_owned());
            let mut command = task.command();
            command.env("TEST_IROH_SECRET", &value);
            let outcome = run_to_end(command);
            if outcome.error().is_some() {
                tried += 1;
            }
            outcome.assert_no_secret(&key);
        }
    }
    assert!(tried > 10, "only {tried} damaged values were refused");
}
