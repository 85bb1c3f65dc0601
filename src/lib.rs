//! A persistent identity for [iroh](https://docs.rs/iroh) endpoints.
//!
//! An endpoint's identity is an Ed25519 key; its public half is the [`EndpointId`] that
//! peers dial. iroh makes a new one on every start unless it is given one. This crate
//! keeps it in a file: loaded when it is there, generated and stored safely when it is
//! not, locked while an endpoint uses it.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let endpoint = iroh_identity::PersistentEndpoint::open("endpoint.key").await?;
//! println!("{}", endpoint.id()); // the same on every run
//! endpoint.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! [`PersistentEndpoint::open`] gives back a plain [`iroh::Endpoint`].
//! [`PersistentEndpoint::builder`] chooses a default per-user location, the preset, any
//! option of iroh's own builder, an environment variable and the lock wait. For those who
//! bind the endpoint themselves, [`load_or_generate`] gives the key alone and
//! [`IdentityLock`] the lock. [`decode_key`] and [`encode_key`] read and write every key
//! format in memory.
//!
//! # Design
//!
//! - **Format.** New keys are PKCS#8 v2 PEM (`BEGIN PRIVATE KEY`), which holds the public
//!   key too, so a damaged file is detected instead of becoming another identity. Keys
//!   are read by content: PKCS#8 PEM or DER, OpenSSH (`ssh-keygen -t ed25519`), the 32
//!   raw bytes iroh's documentation writes, or 64 hex or 52 base32 characters. A file is
//!   never rewritten in another format.
//! - **An identity is never lost.** An existing key file is never written, replaced or
//!   deleted, even when it is damaged, unreadable, of an unknown format or the wrong
//!   size: that is an error naming the path and the problem.
//! - **Crash-safe creation.** A new key is written to a temporary file beside it
//!   (`0600`), synced, published under its name by a rename that never replaces
//!   anything, and the directory is synced. A crash leaves no key or a whole one. When
//!   the directory cannot be synced after the key is published (a directory that may be
//!   written but not read), the key is used and a warning logged: it is there, only its
//!   survival of a power loss is not confirmed.
//! - **First-run races.** Processes that create the same key at once all end up with
//!   the same one: the losers read the winner's.
//! - **One live endpoint per identity.** The key file is locked (`flock`) while an
//!   endpoint, or any clone of it, is open. A second open waits a little
//!   ([`DEFAULT_LOCK_WAIT`]), then fails with [`Error::InUse`]. Closing the endpoint,
//!   dropping its last clone or the death of the process releases it.
//! - **Read-only keys.** An existing key is never written and nothing else has to be, so
//!   a read-only file or directory (a Kubernetes secret) works, lock included. Where it
//!   can, stable addressing writes its ports file beside the key; where it cannot, the
//!   endpoint binds fresh ports.
//! - **Stable addressing.** [`PersistentEndpoint::open`] remembers the endpoint's UDP
//!   ports beside the key and binds them again, so that its tickets survive a restart
//!   ([`Builder::stable_addressing`]).
//!
//! # Tickets
//!
//! A ticket (`iroh_tickets::endpoint::EndpointTicket`) holds an endpoint's id, the direct
//! addresses (IP and UDP port) it had when the ticket was made, and its home relay. A
//! peer dials what is in it, so a ticket reaches the endpoint after a restart if one of
//! them still leads to it:
//!
//! - **the id** stays the same: that is the key file;
//! - **a direct address** stays valid when the machine keeps its IP address and the port
//!   is the same, which stable addressing sees to. This works offline and with no relay.
//!   It does not when the address changes (another network, a new container, a new DHCP
//!   lease), or when another program took the port (the log says so);
//! - **the home relay** stays valid when the endpoint picks the same one again: with a
//!   single relay always, with n0's relays when it is still nearest to the same one. The
//!   relay forwards by id, whatever the ports.
//!
//! With the [`N0`](iroh::endpoint::presets::N0) preset, online, a peer can also look the
//! new addresses up by id, with or without a ticket.
//!
//! # Security
//!
//! **Who may change the key.** On unix, before a key is read or created, the crate checks
//! who could replace it, as OpenSSH's `StrictModes` and Tor's `check_private_dir` do.
//! Every directory from `/` down to the key, every symbolic link followed on the way and
//! the key file itself must belong to the process's effective user or to root, and must
//! not be writable by anyone else; otherwise the open fails with
//! [`Error::UntrustedPath`], which names the path, its owner and mode, and the fix. Two
//! exceptions, where this crate differs from OpenSSH:
//!
//! - a **sticky** directory that every user may write (`/tmp`, mode `1777`) is accepted:
//!   others may add names there but not rename or remove ours, and what they plant (a
//!   key, a link) is theirs and refused in turn;
//! - a directory **writable by a group the process is in** is accepted: the members of
//!   one's own groups are trusted like the user. That is a Kubernetes volume with
//!   `fsGroup` (mode `2775`). A group the process is not in is refused.
//!
//! A key file of the current user that group or others may access is refused with
//! [`Error::InsecurePermissions`] (`chmod 600`; in a Kubernetes secret volume,
//! `defaultMode: 0400`). A key owned by root and read by another user, a mounted secret,
//! must be readable through its group or other bits, which is root's choice; it must not
//! be writable by others. [`Builder::allow_insecure_permissions`] turns all of these
//! checks off, and nothing else.
//!
//! **How files are made.** The key's directory is opened once the path is checked, and
//! everything after happens through its descriptor: missing directories are made with
//! `mkdirat` and given mode `0700` through their own descriptor (a directory swapped for
//! a link meanwhile makes the open fail, never a `chmod` of the link's target), the key
//! is written to a temporary file `0600` whose name ends in 64 random bits (no one can
//! take the name first), and published with a rename that replaces nothing. The
//! directory lock that keeps creators in turn is waited for no longer than the
//! [lock wait](Builder::lock_wait); after that the key is created without it, so a
//! lock that another user holds on a shared directory delays a first start, never stops
//! it.
//!
//! **The ports file** beside the key is replaced only when it is absent or is one this
//! crate wrote; one that is anything else, a link, or another user's is left alone, and
//! remembered ports below 1024 are ignored.
//!
//! **Secrets.** No key material appears in any error, `Debug` output or log line, and
//! buffers that held key bytes are zeroed. Nothing read from a key file is echoed into an
//! error unescaped.
//!
//! # Limitations
//!
//! - When the key comes from an environment variable ([`Builder::key_from_env`]) there
//!   is no file, so no lock: nothing stops two processes started with the same variable.
//! - OpenSSL reads PKCS#8 v2 only from version 3.5 on; older versions (3.0 is common)
//!   reject the crate's key files. [`encode_key`] with [`KeyFormat::Pkcs8PemV1`] (or
//!   `iroh-identity export --format pkcs8-v1`) gives them a copy they read.
//! - Locks are advisory `flock` locks, per host: two machines sharing a key over a
//!   network file system are not kept apart. A lock belongs to an open file, so a child
//!   made with `fork` and no `exec` shares its parent's: the identity stays held until
//!   both have closed it or exited.
//! - The checks of who may change the key trust root, the process's user and the members
//!   of its groups. They see owners and modes, not ACLs.
//! - Unix (Linux above all) is what is tested. Elsewhere, files get no modes and no owner
//!   checks, and keys are published with a hard link. On unixes other than Linux, a key
//!   directory that may be written but not read (mode `0300`) cannot be used, and
//!   [`inspect_key`] takes the lock for an instant to see whether it is held.
//!
//! [`EndpointId`]: iroh::EndpointId

#![deny(missing_docs, unsafe_code, rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod endpoint;
mod error;
mod key;
mod key_file;
mod lock;
mod ports;
mod sys;
mod temp_file;
mod trust;
mod wait;

pub use endpoint::{
    Builder, DEFAULT_KEY_FILE_NAME, DEFAULT_LOCK_WAIT, MAX_PORT_WAIT, PersistentEndpoint,
    default_key_path,
};
pub use error::{Error, KeyProblem, PathKind, TrustProblem};
pub use key::{KeyFormat, decode_key, encode_key};
pub use key_file::{KeyReport, inspect_key, load_key, load_or_generate, store_new_key};
pub use lock::IdentityLock;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
