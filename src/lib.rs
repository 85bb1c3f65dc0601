//! A persistent identity for [iroh](https://docs.rs/iroh) endpoints.
//!
//! An endpoint's identity is an Ed25519 key; its public half is the [`EndpointId`] that
//! peers dial. iroh makes a new one on every start unless it is given one. This crate
//! keeps it in a file: loaded when it is there, generated and stored safely when it is
//! not, locked while an endpoint uses it, and it keeps the endpoint's ports too, so that
//! its tickets survive a restart.
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
//! - **The endpoint.** [`PersistentEndpoint::open`] binds a plain [`iroh::Endpoint`]
//!   with iroh's `N0` preset. [`PersistentEndpoint::builder`] holds every option: a key
//!   path or a [default per-user location](Builder::default_location), an
//!   [environment variable](Builder::key_from_env),
//!   [`create_if_missing`](Builder::create_if_missing), the
//!   [lock wait](Builder::lock_wait), the preset, and any step on iroh's own builder
//!   ([`configure`](Builder::configure)); with the `keyring` and `etcd` features, a
//!   key in the OS secret store (`keychain`) and a lease across machines (`lease`).
//! - **The identity.** [`Identity::open`] (or the builder's
//!   [`identity`](Builder::identity)) takes the identity without binding: its
//!   [`id`](Identity::id) is known at once, and [`Identity::bind`] binds it with an
//!   iroh builder you configured. The key never leaves the [`Identity`]: it reaches an
//!   endpoint only together with its lock.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use iroh::{Endpoint, endpoint::presets};
//! use iroh_identity::Identity;
//!
//! let identity = Identity::open("endpoint.key").await?;
//! println!("{}", identity.id());
//! let endpoint = identity.bind(Endpoint::builder(presets::Minimal)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! For tools: [`load_key`] reads a key without creating or locking it, [`store_new_key`]
//! stores one from elsewhere as carefully as a generated one, [`inspect_key`] reports on
//! a key file, and [`decode_key`] and [`encode_key`] read and write every format in
//! memory.
//!
//! # Guarantees
//!
//! Each is tested in `tests/identity` (the module names the guarantee's number) and put
//! under kills, races, hostile input and faults by the campaigns of `RELIABILITY.md`.
//!
//! 1. **Every key you have keeps its id.** Keys are read by their content: PKCS#8 PEM
//!    or DER, OpenSSH (`ssh-keygen -t ed25519`), the 32 raw bytes iroh's documentation
//!    writes, 64 hex or 52 base32 characters ([`decode_key`] has the details). New keys
//!    are PKCS#8 v2 PEM, which holds the public key too, so that a damaged file is
//!    detected instead of becoming another identity. A file is never rewritten in
//!    another format.
//! 2. **An identity is never lost.** An existing key file is never written, replaced or
//!    deleted, even when it is damaged, unreadable, of an unknown format or the wrong
//!    size: that is an error naming the path and the problem. With
//!    [`create_if_missing(false)`](Builder::create_if_missing), a missing key is an
//!    error too, instead of a new identity.
//! 3. **Keys are created crash-safely.** A new key is written to a temporary file beside
//!    it (`0600`), synced, published under its name by a rename that never replaces
//!    anything, and the directory is synced. A crash leaves no key or a whole one, and
//!    the next creation removes the temporary files of killed runs (where the directory
//!    can be listed). When the directory
//!    cannot be synced after the key is published (one that may be written but not
//!    read), the key is used and a warning logged: only its survival of a power loss is
//!    unconfirmed.
//! 4. **First-run races settle.** Processes that create the same key at once all end up
//!    with the same one: the losers read the winner's.
//! 5. **The key stays private.** On unix, key files are `0600` and the directories the
//!    crate creates `0700`, whatever the umask. Like OpenSSH, a key file of yours that
//!    group or others may access is refused ([`Error::InsecurePermissions`], whose
//!    message gives the `chmod`, or `defaultMode: 0400` for a Kubernetes secret).
//! 6. **Read-only keys work.** An existing key is never written and nothing else has to
//!    be, so a read-only file or directory (a Kubernetes secret) works, lock included.
//!    Where it can, the crate writes the ports file beside the key; where it cannot, the
//!    endpoint binds fresh ports.
//! 7. **One live endpoint per identity.** Two endpoints with the same key do not fail in
//!    iroh: their connections silently split between them. Here the identity is locked
//!    (`flock`) while an [`Identity`], or an endpoint bound with it, or any clone of
//!    that endpoint, is alive: the key file that was read, and, whatever the key came
//!    from (a file, a copy of it, an environment variable, the secret store), the
//!    identity on this host, by its [`EndpointId`] (`ID.lock` in a private directory
//!    that every process of the user finds in the same place, whatever its environment:
//!    `/run/iroh-identity` for root, `~/.local/state/iroh-identity` for a user with a
//!    home, else `/tmp/iroh-identity-UID`). A second open waits up to the
//!    [lock wait](Builder::lock_wait) ([`DEFAULT_LOCK_WAIT`]), then fails with
//!    [`Error::InUse`]. Closing the endpoint, dropping its last clone or the death of the
//!    process releases it: there are no stale locks.
//! 8. **Secrets stay out of sight.** No key material appears in any error, `Debug`
//!    output or log line, at any level; buffers that held key bytes are zeroed; nothing
//!    read from a key file is echoed into an error unescaped.
//! 9. **No other local user can replace, plant or stall an identity.** Before a key is
//!    read or created, every directory from `/` down to it, every symbolic link on the
//!    way and the key itself must belong to the process's user or to root and be
//!    writable by no one else, as OpenSSH's `StrictModes` and Tor's `check_private_dir`
//!    require; otherwise [`Error::UntrustedPath`] names the path, its owner and mode,
//!    and the fix. Where this crate differs from OpenSSH: a sticky directory (`/tmp`) is
//!    accepted, since others may add names there but not rename or remove ours; and a
//!    directory writable by a group the process is in is accepted (a Kubernetes
//!    `fsGroup` volume), one of a group it is not in refused. A key of another user is
//!    refused; root's key read by another user (a mounted secret) may be readable, not
//!    writable (a warning says when every user may read it). The path is walked one name
//!    at a time through descriptors, as the kernel would, and never looked up by name
//!    again: what is planted on it after it was checked is never followed. New
//!    directories and files are made through the descriptor of their directory, never
//!    through a link, with random temporary names; the directory lock that keeps
//!    creators in turn is waited for no longer than the lock wait, 5 s at most. All of
//!    these checks, and only these, are what
//!    [`allow_insecure_permissions`](Builder::allow_insecure_permissions) turns off,
//!    with the mode check of guarantee 5.
//! 10. **Tickets survive a restart.** The endpoint's UDP ports are remembered beside the
//!     key and bound again: see [*Stable addressing*](#stable-addressing).
//! 11. **The secret store is a key file's equal** (feature `keyring`: `Builder::keychain`).
//!     An entry holds the same PKCS#8 v2 PEM as a key file, so that damage is detected;
//!     what is stored is read back before it is used. Racing first runs end with one key:
//!     creators take turns under a lock of the user's, and re-read the entry. An entry
//!     that holds anything else is an error naming it, and is never replaced; a store
//!     that cannot be reached, is locked or refuses access is an error too: never a new
//!     identity, and never a file in its place. To fall back to a file, match
//!     [`Error::Keychain`] and open a key path: that choice is yours.
//! 12. **One live endpoint per identity across machines** (feature `etcd`:
//!     `Builder::lease` with an `EtcdLease`). Before it binds, an open takes the
//!     identity's lease in etcd, a key named for the [`EndpointId`] created only if
//!     absent; a standby waits for it for as long as its lock wait says (for ever is
//!     fine), and takes over as soon as the holder closes (the lease is revoked; a holder
//!     that exits right after closing awaits `EtcdLease::released` first), or within the
//!     TTL when it died. The holder keeps the lease alive on one keep-alive stream and
//!     watches its key. It closes its endpoint first, then logs an error and tells the
//!     application (`EtcdLease::lost`): when etcd has confirmed no keep-alive for the TTL
//!     less a fifth (on the monotonic clock, from a thread of its own), and within a round
//!     trip when its key is deleted (`etcdctl del`), its lease revoked (`etcdctl lease
//!     revoke`: the way to force a failover) or the key bound to another lease. The
//!     shortest TTL, 5 s, holds through a leader change at etcd's default election timeout
//!     and a round trip of a quarter of the TTL. TLS, client certificates and a user are
//!     etcd-client's `ConnectOptions`; what waiting does not mend (a login or permission
//!     refused, a TLS failure, endpoints of two clusters) fails the open at once
//!     (`Error::LeaseRefused`), what may pass is tried again and reported through
//!     `EtcdLease::on_wait`. Each holder gets a fencing token, larger than every earlier
//!     holder's while etcd keeps its data; `EtcdLease::fencing_token` says what holds when
//!     it does not.
//!
//! # Stable addressing
//!
//! A ticket (`iroh_tickets::endpoint::EndpointTicket`) holds an endpoint's id, the direct
//! addresses (IP and UDP port) it had when the ticket was made, and its home relay. A
//! peer dials what is in it, so a ticket reaches the endpoint after a restart if one of
//! them still leads to it: the id does (the key file); the home relay does when the
//! endpoint picks the same one again (always with a single relay of your own; with n0's
//! relays while the nearest is the same); a direct address does when the machine keeps
//! its IP address and the port is the same. That last one is stable addressing, and it
//! works offline, with no relay at all.
//!
//! iroh binds a socket on all interfaces for IPv4 and one for IPv6, on random ports.
//! Their ports are remembered in a file beside the key, named like it with `.ports`
//! appended (`endpoint.key.ports`), and asked for again on the next bind. It is on
//! unless [`Builder::stable_addressing`] turns it off, and:
//!
//! - **Your addresses win.** [`Builder::bind`] owns the order of the builder's steps: the
//!   remembered sockets go first, as iroh's own are, and a [`configure`](Builder::configure)
//!   step may bind any address of its own (a fixed port or port 0, one interface or all),
//!   or clear them with `clear_ip_transports()`. A family the steps bind a default
//!   socket for keeps theirs; the remembered port fills in only where they bind none.
//!   [`Identity::bind`] is given a builder that is already configured, whose sockets
//!   iroh 1.4 cannot show; adding one to it could fail, so it binds the builder as it is
//!   and only remembers the ports.
//! - **A busy port is waited for.** A gracefully closing endpoint releases the identity
//!   at once but keeps its sockets while its connections drain (iroh allows about 3 s).
//!   So a remembered port still in use is waited for until the lock wait ends,
//!   [`MAX_PORT_WAIT`] at most, or 250 ms when the port is held by an endpoint of this
//!   process that was closed but not dropped. Then the endpoint binds a fresh port, logs
//!   a warning that says why, and remembers the new one.
//! - **It never makes an open fail.** A ports file that is missing, damaged or cannot
//!   be written (a read-only secret mount) means fresh ports and a line in the log; so
//!   does a remembered port that another program takes in the instant between the check
//!   that it is free and iroh's bind: the bind is tried again without it. The
//!   file is replaced only when it is one this crate wrote, never when it is anything
//!   else (another file, a link, another user's), and ports below 1024 are ignored. It
//!   is written like a key, only by the holder of the identity.
//! - **What it cannot do.** A ticket does not survive a new IP address (another network,
//!   a new container, a new DHCP lease) with no relay or address lookup to help, nor a
//!   port that another program took: UDP ports are shared by every user of the host, so
//!   another local user can take a remembered port, and then costs the endpoint the wait
//!   above and its old tickets' direct address, never its start. A key from an
//!   environment variable or the secret store has no file, so nothing is remembered. Only
//!   sockets on all interfaces are remembered, and of a family for which the `configure`
//!   steps bind one of their own beside iroh's, none: which one is iroh's cannot be told.
//!
//! # Limitations
//!
//! - The host lock is per user and per file system view: two users of one host with the
//!   same key, or two containers (or services with `PrivateTmp=`) that see different
//!   directories, are not kept apart. A key from an environment variable or the secret
//!   store is locked only by the host lock: when its directory cannot be made or is not
//!   private (for a user without a home, another user took the name in `/tmp` first),
//!   opening fails with the reason; for a key file, whose own lock still holds, that is
//!   a warning, and copies of the file are then no longer kept apart. Lock files are
//!   never removed: one per identity ever run, empty.
//! - A lease (guarantee 12) cannot stop a process that does not run. A holder that was
//!   paused (SIGSTOP, a long GC pause, a VM migrated or suspended) for longer than the TTL
//!   has lost its lease when it resumes, and a standby may hold it; the holder closes its
//!   endpoint as its first act (its timer is due), but until then its endpoint is open. A
//!   system (or VM) suspended as a whole stops the monotonic clock the holder measures
//!   with, so its timer is not due at the resume: it learns of the loss from its watch or
//!   its next keep-alive, within a sixth of the TTL, or at the latest after the TTL less
//!   the margin when etcd does not answer. A holder starved of CPU (a container's CPU
//!   limit with busy threads beside it) closes late, by as long as the kernel keeps its
//!   fence's thread from the CPU: the thread makes the fence independent of the
//!   application's runtime (work that never yields does not delay it), not of the CPU.
//!   In those windows its endpoint is open too: a packet already queued for it may be
//!   answered, and if it reaches the relay before it closes, the relay, which keeps the
//!   newest connection for an id, may route the id to it for that instant. Measured here
//!   (RELIABILITY.md): closed within a few milliseconds of the resume; starved to 1 ms of
//!   CPU per 100 ms, up to seconds after a standby bound, which a TTL five times that
//!   long covers. Work that must never run twice should check the fencing token where
//!   it lands, as with any lease; a token grows only while etcd keeps its data. A network
//!   partition that cuts a holder off from etcd but not from its peers ends the same way:
//!   it closes within the TTL. Clocks need not agree between machines; each holder
//!   measures its own. Every machine must give the same cluster and the same prefix
//!   (ending in `/`): another prefix is another key, held at the same time. Tested with
//!   etcd 3.4.23 (Debian's).
//! - The secret store is tested with GNOME Keyring (the Secret Service) on Linux. The
//!   Windows Credential Manager is compiled in CI, not run; the macOS Keychain is
//!   neither, for want of Apple's toolchain: both are the `keyring` crate's own stores.
//!   A locked store on a desktop asks the user to unlock it, and opening waits for the
//!   answer.
//! - OpenSSL reads PKCS#8 v2 only from version 3.5 on; older versions (3.0 is common)
//!   reject the crate's key files. [`encode_key`] with [`KeyFormat::Pkcs8PemV1`] (or
//!   `iroh-identity export --format pkcs8-v1`) gives them a copy they read.
//! - Locks are advisory `flock` locks, per host: two machines sharing a key over a
//!   network file system are not kept apart. A lock belongs to an open file, so a child
//!   made with `fork` and no `exec` shares its parent's: the identity stays held until
//!   both have closed it or exited. Where the file system refuses locks, opening fails
//!   with the system's reason.
//! - Stable addressing keeps ports, not IP addresses.
//! - The checks of who may change the key trust root, the process's user and the
//!   members of its groups. They see owners and modes, not ACLs. In a user namespace
//!   (a rootless container), files of users it does not map, `/` among them, belong to
//!   the overflow user (65534), and every key is refused: there, turn the checks off
//!   with [`allow_insecure_permissions`](Builder::allow_insecure_permissions). A key
//!   planted in a sticky directory as a hard link to a file of the user's is stopped by
//!   the kernel's `fs.protected_hardlinks` (on by default), not by this crate.
//! - Unix (Linux above all) is what is tested. Elsewhere, files get no modes and no
//!   owner checks, and keys are published with a hard link. On unixes other than Linux,
//!   a key directory that may be written but not read (mode `0300`) cannot be used, and
//!   [`inspect_key`] takes the lock for an instant to see whether it is held. On Linux
//!   it reads `/proc/locks`, which does not show locks held from another PID namespace
//!   (another container on the same volume).
//!
//! [`EndpointId`]: iroh::EndpointId

#![deny(missing_docs, unsafe_code, rustdoc::broken_intra_doc_links)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod endpoint;
mod error;
mod guard;
mod identity;
mod key;
mod ports;
mod store;
mod sys;
mod temp_file;
mod wait;

pub use endpoint::{Builder, KeyLocation, NoKeyLocation, PersistentEndpoint};
pub use error::{Error, FileKind, KeyProblem, KeychainProblem, Operation, PathKind, TrustProblem};
/// The etcd client the lease is built on (feature `etcd`): its
/// [`ConnectOptions`](etcd_client::ConnectOptions) (TLS, a user) are what
/// [`EtcdLease::connect_options`] takes.
#[cfg(feature = "etcd")]
pub use etcd_client;
#[cfg(feature = "etcd")]
pub use guard::lease::etcd::{DEFAULT_LEASE_TTL, EtcdLease, LeaseWait};
pub use guard::lease::{LeaseLoss, LeaseRefusal};
pub use identity::{Identity, KeySource};
pub use key::{KeyFormat, decode_key, encode_key};
pub use store::file::{
    DEFAULT_KEY_FILE_NAME, KeyReport, default_key_path, inspect_key, load_key, store_new_key,
};
#[cfg(feature = "keyring")]
pub use store::keychain::{delete_keychain_entry, load_keychain_key, store_new_keychain_key};
pub use wait::{DEFAULT_LOCK_WAIT, MAX_PORT_WAIT};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
