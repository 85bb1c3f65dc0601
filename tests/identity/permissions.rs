//! Guarantee 5 on reading: like OpenSSH, a key file of the current user that group or
//! others may access is refused with the fix in the message, unless allowed. Keys of
//! other users, and where keys are kept, are `trust`'s (guarantee 9).

use std::{fs, os::unix::fs::PermissionsExt};

use iroh_identity::{Error, load_key};

use crate::support::{builder, known_key, temp_dir, write_private};

#[test]
fn an_exposed_key_of_ours_is_refused_with_the_chmod_that_fixes_it() -> anyhow::Result<()> {
    for exposed in [0o644, 0o640, 0o604, 0o660, 0o606, 0o666, 0o610, 0o601] {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        write_private(&path, &known_key().to_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(exposed))?;
        let err = load_key(&path).expect_err("an exposed key is refused");
        assert!(
            matches!(err, Error::InsecurePermissions { mode, .. } if mode == exposed),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(message.contains(&format!("{exposed:04o}")), "{message}");
        // Nothing was changed, the mode least of all.
        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o7777, exposed);
        assert_eq!(fs::read(&path)?, known_key().to_bytes());
    }
    Ok(())
}

#[test]
fn private_modes_are_accepted() -> anyhow::Result<()> {
    for private in [0o600, 0o400, 0o700] {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        write_private(&path, &known_key().to_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(private))?;
        assert_eq!(
            load_key(&path)?.public(),
            known_key().public(),
            "{private:o}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_builder_can_allow_an_exposed_key() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, &known_key().to_bytes());
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640))?;
    let strict = builder(&path).bind().await;
    assert!(
        matches!(strict, Err(Error::InsecurePermissions { .. })),
        "{strict:?}"
    );
    let endpoint = builder(&path)
        .allow_insecure_permissions(true)
        .bind()
        .await?;
    assert_eq!(endpoint.id(), known_key().public());
    endpoint.close().await;
    assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o7777, 0o640);
    Ok(())
}
