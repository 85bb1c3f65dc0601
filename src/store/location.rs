//! Where a key is to be kept: a key file at a path, the application's default key file,
//! or an entry of the OS secret store; and what that resolves to.

use std::path::{Path, PathBuf};

use directories::ProjectDirs;

use super::KeySource;
use crate::error::Error;

/// The name of the key file in an application's default location.
const DEFAULT_KEY_FILE_NAME: &str = "endpoint.key";

/// Where an identity's key is kept: what [`Identity::builder`](crate::Identity::builder)
/// is given. A path converts into one.
///
/// ```
/// use iroh_identity::KeyLocation;
///
/// let file = KeyLocation::from("/etc/chat/endpoint.key");
/// // ~/.local/share/chat/endpoint.key on Linux:
/// let default = KeyLocation::default_for("com", "example", "chat");
/// # let _ = (file, default);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLocation(Where);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Where {
    Path(PathBuf),
    Default {
        qualifier: String,
        organization: String,
        application: String,
    },
    #[cfg(feature = "keyring")]
    Keychain {
        service: String,
        account: String,
    },
}

impl KeyLocation {
    /// The key file at `path`. Missing directories are created (`0700`).
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self(Where::Path(path.into()))
    }

    /// The key file of an application in the user's local data directory:
    /// `$XDG_DATA_HOME/<application>/endpoint.key` on Linux, `~/Library/Application
    /// Support/<qualifier>.<organization>.<application>/endpoint.key` on macOS,
    /// `%LOCALAPPDATA%\<organization>\<application>\data\endpoint.key` on Windows.
    ///
    /// The directory is local, never roaming: a roaming profile would carry the identity
    /// to a second machine and run it there at the same time. [`resolve`](Self::resolve)
    /// tells which path it is.
    pub fn default_for(qualifier: &str, organization: &str, application: &str) -> Self {
        Self(Where::Default {
            qualifier: qualifier.to_owned(),
            organization: organization.to_owned(),
            application: application.to_owned(),
        })
    }

    /// The entry named by `service` and `account` in the OS secret store: the Secret
    /// Service (GNOME Keyring, KWallet) on Linux, the Keychain on macOS, the Credential
    /// Manager on Windows. Feature `keyring`.
    ///
    /// The store keeps a key as a key file does (guarantee 11). An entry holds the same
    /// PKCS#8 v2 PEM as a key file, so that damage is detected; what is stored is read
    /// back before it is used. Racing first runs end with one key: creators take turns
    /// under a lock file of the user's, and re-read the entry. A missing entry is created
    /// with a new key; an entry that holds anything else is an error naming it, and is
    /// never replaced; a store that cannot be reached, is locked or refuses access is an
    /// error too: never a new identity, and never a file in its place. To fall back to a
    /// file, match [`Error::Keychain`] and open a key path: that choice is yours. There is
    /// no key file, so no ports are remembered; the identity is locked on the host as any
    /// other.
    ///
    /// Every call into the store runs on a thread of its own and is waited for until the
    /// [lock wait](crate::Builder::lock_wait) ends (1 s at least): a daemon that is
    /// stopped, an unlock prompt nobody answers or a bus that vanished is an error then,
    /// and no write is started after it (one the store was still carrying out may land
    /// later: the entry then holds a key no endpoint ran, which the next open loads). A
    /// desktop app that lets its user unlock the store should give it a longer lock wait.
    ///
    /// GNOME Keyring (the Secret Service) is run here, and the Windows Credential Manager
    /// under Wine; the macOS Keychain is not compiled here. All are the `keyring` crate's
    /// own stores. Creating an entry needs the user's home, for its lock file; a
    /// process that does not trust that directory (its group may write it, and the
    /// process is not in the group) cannot create one, and says why.
    #[cfg(feature = "keyring")]
    pub fn keychain(service: &str, account: &str) -> Self {
        Self(Where::Keychain {
            service: service.to_owned(),
            account: account.to_owned(),
        })
    }

    /// Where exactly the key is: the default location resolved to its path.
    ///
    /// # Errors
    ///
    /// For [`default_for`](Self::default_for):
    /// - [`Error::NoHomeDirectory`] when the user has no home directory.
    /// - [`Error::RelativeDataDirectory`] when `HOME` or `XDG_DATA_HOME` is a relative
    ///   path: the key would land under whatever the current directory is, and a later
    ///   start from another directory would make a new identity.
    pub fn resolve(&self) -> Result<KeySource, Error> {
        Ok(match &self.0 {
            Where::Path(path) => KeySource::File { path: path.clone() },
            Where::Default {
                qualifier,
                organization,
                application,
            } => KeySource::File {
                path: default_key_path(qualifier, organization, application)?,
            },
            #[cfg(feature = "keyring")]
            Where::Keychain { service, account } => KeySource::Keychain {
                service: service.clone(),
                account: account.clone(),
            },
        })
    }
}

impl From<PathBuf> for KeyLocation {
    fn from(path: PathBuf) -> Self {
        Self::file(path)
    }
}

impl From<&Path> for KeyLocation {
    fn from(path: &Path) -> Self {
        Self::file(path)
    }
}

impl From<&PathBuf> for KeyLocation {
    fn from(path: &PathBuf) -> Self {
        Self::file(path)
    }
}

impl From<&str> for KeyLocation {
    fn from(path: &str) -> Self {
        Self::file(path)
    }
}

impl From<String> for KeyLocation {
    fn from(path: String) -> Self {
        Self::file(path)
    }
}

/// The key file of an application in the user's local data directory.
fn default_key_path(
    qualifier: &str,
    organization: &str,
    application: &str,
) -> Result<PathBuf, Error> {
    // Where `directories` reads XDG_DATA_HOME, it ignores a relative one and falls back
    // to ~/.local/share: a key silently elsewhere than the user meant.
    #[cfg(not(any(target_os = "macos", target_os = "ios", windows)))]
    if let Some(value) = std::env::var_os("XDG_DATA_HOME")
        && !value.is_empty()
        && Path::new(&value).is_relative()
    {
        return Err(Error::RelativeDataDirectory {
            variable: "XDG_DATA_HOME".to_owned(),
            value: value.into(),
        });
    }
    let path = ProjectDirs::from(qualifier, organization, application)
        .map(|dirs| dirs.data_local_dir().join(DEFAULT_KEY_FILE_NAME))
        .ok_or(Error::NoHomeDirectory)?;
    if path.is_relative() {
        return Err(Error::RelativeDataDirectory {
            variable: "HOME".to_owned(),
            value: std::env::var_os("HOME").unwrap_or_default().into(),
        });
    }
    Ok(path)
}
