//! Guarantee 8: no key material in any error, `Debug` output or log line, at any level.

use std::time::Duration;

use ed25519_dalek::ed25519::pkcs8::{EncodePrivateKey, KeypairBytes, PublicKeyBytes};
use iroh::SecretKey;
use iroh_identity::{Identity, load_key};

use crate::support::{LogCapture, assert_no_secret, builder, temp_dir, write_private};

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
#[cfg(feature = "keyring")]
fn no_key_material_from_the_keychain_in_logs_or_errors() {
    use iroh_identity::decode_key;

    use crate::support::child::{Action, Task, run_to_end};

    let service = crate::support::secret_service::SecretService::start();
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
}
