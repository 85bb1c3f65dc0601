//! What differs between platforms, behind one set of functions: how a key file is opened
//! and created, what its permissions mean, and how it is published without clobbering.

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(not(unix))]
mod other;
#[cfg(not(unix))]
pub(crate) use other::*;
