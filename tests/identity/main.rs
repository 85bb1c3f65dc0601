//! Integration tests: real files, real iroh endpoints on loopback, real child processes.
//!
//! One test binary: one module per guarantee, and `campaigns` that put the guarantees
//! under kills, races, hostile input and faults at a size that can be turned up. Tests
//! that need another process run this binary again as a child (see `support::child`) or
//! run the crate's examples.

mod campaigns;
#[cfg(feature = "cli")]
mod cli;
mod creation;
mod endpoint;
mod env_var;
mod examples;
mod format;
mod host;
mod interop;
#[cfg(feature = "keyring")]
mod keychain;
#[cfg(feature = "etcd")]
mod lease;
mod lock;
mod permissions;
mod processes;
mod read_only;
mod secrets;
mod support;
mod tickets;
mod trust;

/// Not a test: the body of the child processes that other tests start.
#[test]
#[ignore = "run by other tests as a child process"]
fn child() {
    support::child::run();
}
