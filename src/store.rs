//! Where a key is kept: a key file ([`file`], whose location [`trust`] checks), an
//! environment variable ([`env`]), or the OS secret store ([`keychain`], feature
//! `keyring`).

pub(crate) mod env;
pub(crate) mod file;
#[cfg(feature = "keyring")]
pub(crate) mod keychain;
mod trust;

use std::{path::PathBuf, sync::Arc};

use iroh::SecretKey;

use crate::{Error, KeySource, sys::Dir, wait::Deadline};

/// Where a builder was told the key is kept.
#[derive(Debug)]
pub(crate) enum Location {
    /// A key file.
    File(FileLocation),
    /// An entry of the OS secret store.
    #[cfg(feature = "keyring")]
    Keychain { service: String, account: String },
}

/// Where a key file is.
#[derive(Debug)]
pub(crate) enum FileLocation {
    Path(PathBuf),
    Default {
        qualifier: String,
        organization: String,
        application: String,
    },
}

impl FileLocation {
    /// The key file's path: the default location resolved.
    fn path(&self) -> Result<PathBuf, Error> {
        match self {
            Self::Path(path) => Ok(path.clone()),
            Self::Default {
                qualifier,
                organization,
                application,
            } => file::default_key_path(qualifier, organization, application),
        }
    }
}

/// A key as its store gave it.
pub(crate) struct Stored {
    pub(crate) key: SecretKey,
    pub(crate) source: KeySource,
    /// For a key file: its directory, where its ports are remembered.
    pub(crate) dir: Option<Arc<Dir>>,
}

impl Location {
    /// Where exactly the key is: the default location resolved to its path.
    pub(crate) fn resolve(&self) -> Result<KeySource, Error> {
        Ok(match self {
            Self::File(location) => KeySource::File {
                path: location.path()?,
            },
            #[cfg(feature = "keyring")]
            Self::Keychain { service, account } => KeySource::Keychain {
                service: service.clone(),
                account: account.clone(),
            },
        })
    }

    /// Loads the key, or generates and stores one when there is none and `options` say
    /// so, waiting for a racing creator until `deadline`.
    pub(crate) async fn open(
        &self,
        options: file::Options,
        deadline: Deadline,
    ) -> Result<Stored, Error> {
        match self {
            Self::File(location) => {
                let path = location.path()?;
                let loaded = file::open(&path, options, deadline).await?;
                Ok(Stored {
                    key: loaded.key,
                    source: KeySource::File { path },
                    dir: Some(loaded.dir),
                })
            }
            #[cfg(feature = "keyring")]
            Self::Keychain { service, account } => Ok(Stored {
                key: keychain::open(service, account, options.create_if_missing, deadline).await?,
                source: self.resolve()?,
                dir: None,
            }),
        }
    }
}
