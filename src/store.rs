//! Where a key is kept, and where it came from: a key file ([`file`](mod@file)), an
//! environment variable ([`env`](mod@env)), or the OS secret store ([`keychain`], feature `keyring`), as a
//! [`KeyLocation`] says.

pub(crate) mod env;
pub(crate) mod file;
pub(crate) mod keychain;
mod location;

use std::{ffi::OsString, path::PathBuf, sync::Arc};

use iroh::SecretKey;

pub use self::location::KeyLocation;
use crate::{error::Error, sys::Dir, wait::Deadline};

/// Where an [`Identity`](crate::Identity)'s key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// A key file.
    File {
        /// The key file.
        path: PathBuf,
    },
    /// An environment variable ([`Builder::key_from_env`](crate::Builder::key_from_env)).
    Environment {
        /// The variable's name.
        variable: String,
    },
    /// An entry of the OS secret store ([`KeyLocation::keychain`], feature `keyring`).
    Keychain {
        /// The entry's service.
        service: String,
        /// The entry's account.
        account: String,
    },
}

/// How a key is read, and whether a missing one is created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Skip the checks of who owns and may write the key and the directories above it.
    pub(crate) allow_insecure_permissions: bool,
    /// Create a key when there is none; otherwise that is an error.
    pub(crate) create_if_missing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            allow_insecure_permissions: false,
            create_if_missing: true,
        }
    }
}

/// A key as its store gave it.
pub(crate) struct Stored {
    pub(crate) key: SecretKey,
    pub(crate) source: KeySource,
    /// For a key file: where it is, for the ports file beside it.
    pub(crate) file: Option<StoredFile>,
}

/// A key file's directory, held open, and its name there.
#[derive(Debug)]
pub(crate) struct StoredFile {
    pub(crate) dir: Arc<Dir>,
    pub(crate) name: OsString,
}

/// Loads the key from the environment variable `key_env` when it is set, else from
/// `location`, generating and storing one when there is none and `options` say so, and
/// waiting for a racing creator until `deadline`.
pub(crate) async fn open(
    location: &KeyLocation,
    key_env: Option<&str>,
    options: Options,
    deadline: Deadline,
) -> Result<Stored, Error> {
    if let Some(variable) = key_env
        && let Some(key) = env::load(variable)?
    {
        return Ok(Stored {
            key,
            source: KeySource::Environment {
                variable: variable.to_owned(),
            },
            file: None,
        });
    }
    match location.resolve()? {
        KeySource::File { path } => {
            let loaded = file::open(&path, options, deadline).await?;
            let name = path.file_name().map(ToOwned::to_owned).unwrap_or_default();
            Ok(Stored {
                key: loaded.key,
                source: KeySource::File { path },
                file: Some(StoredFile {
                    dir: loaded.dir,
                    name,
                }),
            })
        }
        #[cfg(feature = "keyring")]
        KeySource::Keychain { service, account } => Ok(Stored {
            key: keychain::open(&service, &account, options.create_if_missing, deadline).await?,
            source: KeySource::Keychain { service, account },
            file: None,
        }),
        source => unreachable!("a location resolves to a file or an entry: {source:?}"),
    }
}
