//! Machines of their own on this host: a network namespace each, joined by a veth pair to
//! a hub, a namespace of the test's own where the machines reach the tests' services;
//! made here and removed when the value is dropped.
//!
//! A process entered into a machine's namespace has its own loopback, its own abstract
//! unix sockets and its own ports, as on another machine; it reaches the hub at
//! [`Network::service_address`]. The host's own namespace gets no interface: an address
//! added there would show up in the addresses of every endpoint the host's tests bind
//! (iroh lists the machine's interfaces), and in their tickets. The services (the tests'
//! proxies to etcd and to a relay) listen in the hub and talk to the host's loopback:
//! a socket belongs to the namespace of the thread that made it.

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, TcpListener},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

/// Machines in namespaces of their own, and the hub that joins them.
pub(crate) struct Network {
    hub: Namespace,
    machines: Vec<Namespace>,
}

impl Network {
    /// `count` machines, each linked to the hub on a /30 of `10.201.0.0/16` (the network is
    /// the test's own: no other test sees these addresses).
    pub(crate) fn new(count: u8) -> Self {
        let hub = Namespace::new("h");
        let machines = (0..count)
            .map(|m| {
                let machine = Namespace::new(&format!("m{m}"));
                let (hub_end, machine_end) =
                    (format!("{}h", machine.name), format!("{}m", machine.name));
                // Made in the hub, its peer in the machine: the host never has either.
                hub.ip(&[
                    "link",
                    "add",
                    &hub_end,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &machine_end,
                    "netns",
                    &machine.name,
                ]);
                let (service, addr) = (Ipv4Addr::new(10, 201, m, 1), Ipv4Addr::new(10, 201, m, 2));
                hub.ip(&["addr", "add", &format!("{service}/30"), "dev", &hub_end]);
                hub.ip(&["link", "set", &hub_end, "up"]);
                machine.ip(&["addr", "add", &format!("{addr}/30"), "dev", &machine_end]);
                machine.ip(&["link", "set", &machine_end, "up"]);
                machine.ip(&["route", "add", "default", "via", &service.to_string()]);
                machine
            })
            .collect();
        Self { hub, machines }
    }

    /// Where machine `m` reaches the tests' services: the hub's end of its link. Every
    /// machine reaches every one of these.
    pub(crate) fn service_address(&self, m: usize) -> Ipv4Addr {
        assert!(m < self.machines.len(), "no machine {m}");
        Ipv4Addr::new(10, 201, u8::try_from(m).expect("a few machines"), 1)
    }

    /// A listener on a free port of `ip`, in the hub.
    pub(crate) fn listen(&self, ip: Ipv4Addr) -> TcpListener {
        let handle = self.hub.handle();
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // This thread alone enters the hub: its socket stays there.
                    // SAFETY: setns on a handle we opened; it changes this thread only.
                    let entered = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(entered, 0, "enter the hub: {}", io::Error::last_os_error());
                    TcpListener::bind((ip, 0)).expect("listen in the hub")
                })
                .join()
                .expect("the hub's thread")
        })
    }

    /// Makes `command` run on machine `m`. Call it before `as_user`, while the child may
    /// still enter a namespace (which needs root).
    pub(crate) fn enter<'a>(&self, m: usize, command: &'a mut Command) -> &'a mut Command {
        let handle = self.machines[m].handle();
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

/// A network namespace with loopback up; deleted on drop, with the veth ends in it and
/// so their peers.
struct Namespace {
    name: String,
}

impl Namespace {
    fn new(role: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        // Interface names (the namespace's name and a letter) have 15 bytes at most.
        let name = format!("ii{:x}{role}{n:x}", std::process::id());
        ip(&["netns", "add", &name]);
        let namespace = Self { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    /// Runs `ip ARGS` inside the namespace.
    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn handle(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).expect("open the namespace")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
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
