//! Machines of their own on this host: a network namespace each, joined to the host's by a
//! veth pair on a /30 subnet of its own, made here and removed when the value is dropped.
//!
//! A process entered into a [`Namespace`] has its own loopback, its own abstract unix
//! sockets and its own ports, as on another machine; it reaches the host (where the tests'
//! etcd proxies listen) at [`Namespace::host_side`], and the host reaches it at the
//! second address of the link's subnet.

use std::{
    fs::File,
    io,
    net::Ipv4Addr,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

/// The subnets are taken from `10.201.0.0/16`, a /30 each.
const FIRST_OCTETS: [u8; 2] = [10, 201];

/// Where test processes take turns to pick a free subnet.
const ALLOCATION_LOCK: &str = "/run/iroh-identity-test-net.lock";

/// A network namespace and the veth pair that joins it to the host.
pub(crate) struct Namespace {
    name: String,
    host_veth: String,
    host_side: Ipv4Addr,
}

impl Namespace {
    /// Makes a namespace with loopback up, a veth pair to the host on a free /30 subnet, and
    /// a default route through the host.
    pub(crate) fn new() -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        // Interface names have 15 bytes at most: "ii" + pid + count + one letter.
        let name = format!("ii{:x}x{n:x}", std::process::id());
        let (host_veth, machine_veth) = (format!("{name}h"), format!("{name}m"));
        ip(&["netns", "add", &name]);
        // Removed on drop from here on, whatever fails next.
        let mut namespace = Self {
            name,
            host_veth: host_veth.clone(),
            host_side: Ipv4Addr::UNSPECIFIED,
        };
        ip(&[
            "link",
            "add",
            &host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &machine_veth,
        ]);
        ip(&["link", "set", &machine_veth, "netns", &namespace.name]);
        let (host_side, addr) = allocate(&host_veth);
        namespace.host_side = host_side;
        ip(&["link", "set", &host_veth, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", namespace.name.as_str()];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{addr}/30"), "dev", &machine_veth]);
        inside(&["link", "set", &machine_veth, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &host_side.to_string()]);
        namespace
    }

    /// The host's address on this namespace's link: where it reaches the host.
    pub(crate) fn host_side(&self) -> Ipv4Addr {
        self.host_side
    }

    /// Makes `command` run in this namespace. Call it before `as_user`, while the child may
    /// still enter a namespace (which needs root).
    pub(crate) fn enter<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        let handle = File::open(format!("/run/netns/{}", self.name)).expect("open the netns");
        // SAFETY: setns is async-signal-safe; the handle is moved into the closure and
        // outlives the fork. It is opened close-on-exec, so the program does not inherit it.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        command
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace destroys the veth end inside it, and with it its peer; the
        // host's end is deleted by name too, for a pair that never got into the namespace.
        for args in [
            ["netns", "del", &self.name],
            ["link", "del", &self.host_veth],
        ] {
            let _ = Command::new("ip")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Gives `veth` the first address of a /30 subnet of `10.201.0.0/16` that no interface of
/// the host uses, and returns it with the second, the namespace's. Test processes take
/// turns under a lock, so that two never pick the same one.
fn allocate(veth: &str) -> (Ipv4Addr, Ipv4Addr) {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(ALLOCATION_LOCK)
        .expect("open the subnet lock");
    lock.lock().expect("take the subnet lock");
    let output = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("run ip addr");
    let used: Vec<Ipv4Addr> = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|word| word.split('/').next()?.parse().ok())
        .collect();
    let start = (super::random_u64() % (1 << 14)) as u32;
    let base = (0..1u32 << 14)
        .map(|i| (start + i) % (1 << 14))
        .map(|block| {
            let [_, _, c, d] = (block * 4).to_be_bytes();
            Ipv4Addr::new(FIRST_OCTETS[0], FIRST_OCTETS[1], c, d)
        })
        .find(|base| {
            let first = u32::from(*base);
            !used.iter().any(|addr| (u32::from(*addr) & !3) == first)
        })
        .expect("a free /30 in 10.201.0.0/16");
    let host_side = Ipv4Addr::from(u32::from(base) + 1);
    let addr = Ipv4Addr::from(u32::from(base) + 2);
    ip(&["addr", "add", &format!("{host_side}/30"), "dev", veth]);
    drop(lock);
    (host_side, addr)
}

/// Runs `ip ARGS`; fails the test if it fails.
fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run ip ({err}); install iproute2"));
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}
