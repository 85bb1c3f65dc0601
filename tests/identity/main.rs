//! Integration tests: real files, real iroh endpoints on loopback, real child processes.
//!
//! One test binary, one module per guarantee. Tests that need another process run this
//! binary again as a child (see `support::child`) or run the crate's examples.

mod creation;
mod endpoint;
mod env_var;
mod examples;
mod format;
mod lock;
mod never_lost;
mod permissions;
mod processes;
mod read_only;
mod secrets;
mod support;

/// Not a test: the body of the child processes that other tests start.
#[test]
#[ignore = "run by other tests as a child process"]
fn child() {
    support::child::run();
}
