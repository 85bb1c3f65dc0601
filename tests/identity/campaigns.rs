//! Campaigns: the guarantees under kills, races, hostile input, faults and restarts, each
//! with a figure. RELIABILITY.md reports the figures of a full run.
//!
//! Every campaign is bounded in count and time and stops by itself. `cargo test` runs
//! them small; with `IROH_IDENTITY_CAMPAIGN=full` they run at full size:
//!
//! ```text
//! IROH_IDENTITY_CAMPAIGN=full cargo test --all-features --test identity campaigns:: -- --nocapture --test-threads=1
//! ```
//!
//! Each prints its figures on lines that start with `figure `.

use std::fmt;

// Other users, as real users of a unix host.
#[cfg(unix)]
mod attacker;
// Machines are network namespaces and users of their own.
#[cfg(all(feature = "etcd", target_os = "linux"))]
mod failover;
mod filesystem;
mod hostile;
mod kill;
mod lock;
mod property;
mod race;
mod restart;

/// `small` in an ordinary test run, `full` when `IROH_IDENTITY_CAMPAIGN=full`.
pub(crate) fn size(small: usize, full: usize) -> usize {
    match std::env::var("IROH_IDENTITY_CAMPAIGN").as_deref() {
        Ok("full") => full,
        _ => small,
    }
}

/// Prints a campaign's figure (seen with `--nocapture`).
pub(crate) fn figure(campaign: &str, text: fmt::Arguments<'_>) {
    eprintln!("figure {campaign}: {text}");
}
