//! A persistent identity for [iroh](https://docs.rs/iroh) endpoints.
//!
//! An endpoint's identity is an Ed25519 key; its public half is the [`EndpointId`] that
//! peers dial. iroh makes a new one on every start unless it is given one. This crate
//! keeps it: loaded when it is there, generated and stored safely when it is not, locked
//! while an endpoint uses it; and it keeps the endpoint's ports too, so that its tickets
//! survive a restart.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let endpoint = iroh_identity::PersistentEndpoint::open("endpoint.key").await?;
//! println!("{}", endpoint.id()); // the same on every run
//! endpoint.close().await; // closing also releases the identity for the next start
//! # Ok(())
//! # }
//! ```
//!
//! # Two ways in
//!
//! - **The endpoint.** [`PersistentEndpoint::open`] binds a plain [`iroh::Endpoint`] with
//!   iroh's `N0` preset. [`Identity::builder`] holds every option: where the key is kept
//!   (a [`KeyLocation`]: a path, an application's default, the OS secret store), an
//!   [environment variable](Builder::key_from_env) that wins over it, the
//!   [lock wait](Builder::lock_wait), the preset and any step on iroh's own builder, a
//!   lease across machines; [`Builder::bind`] binds.
//! - **The identity.** [`Identity::open`] (or [`Builder::open`]) takes the identity
//!   without binding: its [`id`](Identity::id) is known at once, and [`Identity::bind`]
//!   binds it with an iroh builder you configured. The key never leaves the [`Identity`]:
//!   it reaches an endpoint only together with its lock.
//!
//! For tools: [`load_key`], [`store_new_key`] and [`inspect_key`] read, store and report
//! on a key file without taking its identity, and [`decode_key`] and [`encode_key`] read
//! and write every format in memory.
//!
//! # Guarantees
//!
//! Each is tested in `tests/identity`, and put under kills, races, hostile input, other
//! local users and faults by the campaigns of `RELIABILITY.md`. The item linked says how.
//!
//! 1. **Every key you have keeps its id**, whatever its format: PKCS#8, OpenSSH, raw, hex
//!    or base32 ([`decode_key`]). A key whose secret everyone knows is refused.
//! 2. **An identity is never lost**: an existing key file is never written, replaced or
//!    deleted ([`Builder::open`]).
//! 3. **Keys are created crash-safely**: a kill leaves no key or a whole one.
//! 4. **First-run races settle**: processes that create a key at once end with one.
//! 5. **The key stays private**: `0600` (Windows: a DACL of the user, SYSTEM and
//!    Administrators alone), and a key others may read is refused
//!    ([`Error::InsecurePermissions`]; on Windows [`Error::UntrustedPath`]).
//! 6. **Read-only keys work**: nothing has to be written (a Kubernetes secret).
//! 7. **One live endpoint per identity on a host**, whatever its key came from, its
//!    process's groups, other users or the OS's cleaners do ([`Identity`]).
//! 8. **No key material in any error**, `Debug` output or log line ([`Error`]).
//! 9. **No other local user can replace, plant or stall an identity**
//!    ([`Error::UntrustedPath`]).
//! 10. **Tickets survive a restart**: the endpoint binds the ports of its last run
//!     ([`Builder::stable_addressing`]).
//! 11. **The OS secret store keeps a key as a key file does** ([`KeyLocation::keychain`],
//!     feature `keyring`).
//! 12. **One live endpoint per identity across machines**, with failover (`EtcdLease`,
//!     feature `etcd`).
//!
//! # Limitations
//!
//! - **Where it is run.** Linux runs every test. Windows runs the suite under Wine in CI
//!   (`cargo xtask test-windows`): every guarantee but 12 (whose tests need Linux's
//!   network namespaces; the lease is the same code) holds there in the form Windows
//!   gives it: DACLs for modes and owners, a byte-range lock of the user's for the host
//!   lock (per user: [`Identity`] says what that means), the Credential Manager for the
//!   secret store. What Wine cannot show (symbolic links, a DACL naming `Users`, a second
//!   user to attack with) is named in RELIABILITY.md. macOS is compiled nowhere here, for
//!   want of Apple's toolchain: nothing is claimed for it.
//! - The host lock is per host and, on Linux, per network namespace: two machines, or
//!   two containers with network namespaces of their own, need a lease (guarantee 12).
//! - The checks of who may change a key see owners and modes, not ACLs; in a rootless
//!   container they refuse every key
//!   ([`allow_insecure_permissions`](Builder::allow_insecure_permissions) says why).
//! - OpenSSL reads PKCS#8 v2 only from version 3.5 on; older versions (3.0 is common)
//!   reject the crate's key files. [`encode_key`] with [`KeyFormat::Pkcs8PemV1`] (or
//!   `iroh-identity export --format pkcs8-v1`) gives them a copy they read.
//! - Stable addressing keeps ports, not IP addresses.
//! - A lease cannot stop a process that does not run, nor one starved of CPU: `EtcdLease`
//!   says what that means.
//!
//! [`EndpointId`]: iroh::EndpointId

#![deny(missing_docs, unsafe_code, rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod endpoint;
mod error;
mod fs;
mod guard;
mod identity;
mod key;
mod ports;
mod store;
mod sys;
mod tools;
mod trust;
mod wait;

pub use endpoint::PersistentEndpoint;
pub use error::{Error, Operation};
#[cfg(feature = "etcd")]
pub use etcd_client;
#[cfg(feature = "etcd")]
pub use guard::lease::etcd::{DEFAULT_LEASE_TTL, EtcdLease, LeaseWait};
pub use guard::lease::problem::{LeaseLoss, LeaseRefusal};
pub use identity::{Builder, DEFAULT_LOCK_WAIT, Identity};
pub use key::{KeyFormat, KeyProblem, decode_key, encode_key};
pub use store::{KeyLocation, KeySource, keychain::KeychainProblem};
pub use sys::{FileKind, Ownership, Principal};
pub use tools::{KeyReport, inspect_key, load_key, store_new_key};
#[cfg(feature = "keyring")]
pub use tools::{delete_keychain_entry, load_keychain_key, store_new_keychain_key};
pub use trust::{PathKind, TrustProblem};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
