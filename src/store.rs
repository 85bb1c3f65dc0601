//! Where a key is kept: a key file ([`file`], whose location [`trust`] checks), or an
//! environment variable ([`env`]).

pub(crate) mod env;
pub(crate) mod file;
mod trust;
