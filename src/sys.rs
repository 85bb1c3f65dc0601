//! The platform, behind one set of functions and types: directories used through their
//! descriptor, files opened without hanging or following links, owners and modes, locks
//! and the identity of the process. Mechanism only: what is trusted is decided in
//! `store::trust`.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
pub(crate) use other::*;
