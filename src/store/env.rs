//! A key in an environment variable: 64 hex or 52 base32 characters, the `IROH_SECRET`
//! convention of sendme and dumbpipe.

use iroh::SecretKey;
use tracing::info;
use zeroize::Zeroizing;

use crate::{
    error::Error,
    key::{self, KeyProblem},
};

/// Reads the key from the environment variable `name`, or `None` if it is unset.
pub(crate) fn load(name: &str) -> Result<Option<SecretKey>, Error> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    let invalid = |problem| Error::InvalidEnvKey {
        name: name.to_owned(),
        problem,
    };
    let len = value.len();
    let value = Zeroizing::new(
        value
            .into_string()
            .map_err(|_| invalid(KeyProblem::NotHexOrBase32 { len }))?,
    );
    let (key, format) = key::decode_text(&value).map_err(invalid)?;
    info!(variable = name, id = %key.public(), %format, "using the endpoint key from the environment");
    Ok(Some(key))
}
