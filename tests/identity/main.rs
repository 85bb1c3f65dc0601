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
// Abstract unix sockets, other users and the kernel's tables: Linux's host lock.
#[cfg(target_os = "linux")]
mod host;
mod interop;
// A real secret store: GNOME Keyring on Linux, the Credential Manager on Windows.
#[cfg(all(feature = "keyring", any(target_os = "linux", windows)))]
mod keychain;
// Machines are network namespaces and users of their own.
#[cfg(all(feature = "etcd", target_os = "linux"))]
mod lease;
mod lock;
// Unix modes; `windows` has their Windows counterparts.
#[cfg(unix)]
mod permissions;
mod processes;
// Unix modes and another user for whom they apply.
#[cfg(unix)]
mod read_only;
mod secrets;
mod support;
mod tickets;
// Unix owners, modes and other users; `windows` has their Windows counterparts.
#[cfg(unix)]
mod trust;
#[cfg(windows)]
mod windows;

/// Not a test: the body of the child processes that other tests start.
#[test]
#[ignore = "run by other tests as a child process"]
fn child() {
    support::child::run();
}
