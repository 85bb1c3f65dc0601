//! Real etcd for the lease tests: one member or a cluster of three, on loopback ports, in
//! a temporary directory, started here and killed when the value is dropped; and
//! `etcdctl` for what an operator does to it.
//!
//! The members run with a short heartbeat and election timeout (10 ms, 100 ms), so that
//! a cluster is up, and elects a new leader, within a fraction of a second.
//!
//! Machines reach etcd through a [`Proxy`] each, on their side of the host (see
//! [`crate::support::net`]): etcd itself listens on loopback only.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::proxy::Proxy;

/// The package that gives `etcd` (`cargo xtask test` installs it).
const PACKAGE: &str = "etcd-server";

/// How long a cluster may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// An etcd cluster of one or more members.
pub(crate) struct Etcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    data_dir: PathBuf,
    process: Option<Child>,
}

impl Etcd {
    /// A single member.
    pub(crate) fn single() -> Self {
        Self::start(1)
    }

    /// Three members.
    pub(crate) fn cluster() -> Self {
        Self::start(3)
    }

    fn start(size: usize) -> Self {
        let dir = super::temp_dir();
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let mut etcd = Self { members, dir };
        for i in 0..etcd.members.len() {
            etcd.start_member(i);
        }
        etcd.wait_until_ready();
        etcd
    }

    /// The client URLs of every member, on loopback: the test's own.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| format!("http://127.0.0.1:{}", member.client_port))
            .collect()
    }

    /// The loopback address of member `i`, for a proxy to forward to.
    pub(crate) fn member_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.members[i].client_port))
    }

    /// How many members the cluster has.
    pub(crate) fn size(&self) -> usize {
        self.members.len()
    }

    /// A URL for a client of `proxy`, which forwards to a member.
    pub(crate) fn url_of(&self, proxy: &Proxy) -> String {
        format!("http://{}", proxy.addr())
    }

    /// Starts member `i` (again, on its data directory: a restart keeps its leases).
    pub(crate) fn start_member(&mut self, i: usize) {
        self.kill_member(i);
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let member = &mut self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let metrics = format!("http://127.0.0.1:{}", member.metrics_port);
        let mut command = Command::new("etcd");
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--listen-metrics-urls", &metrics])
            .args(["--initial-cluster", &initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "test",
            ])
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = command.spawn().unwrap_or_else(|err| {
            panic!("cannot start etcd ({err}); install {PACKAGE}, as `cargo xtask test` does")
        });
        member.process = Some(process);
    }

    /// Kills member `i` (SIGKILL) and waits until it is gone.
    pub(crate) fn kill_member(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            super::signal(process.id(), libc::SIGCONT);
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Runs `etcdctl ARGS` against every member as an operator; fails the test if it
    /// fails. Returns its stdout.
    pub(crate) fn etcdctl(&self, args: &[&str]) -> String {
        self.etcdctl_on(&self.endpoints(), args)
    }

    fn etcdctl_on(&self, endpoints: &[String], args: &[&str]) -> String {
        let output = self.try_etcdctl(endpoints, args, Duration::from_secs(5));
        assert!(
            output.status.success(),
            "etcdctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn try_etcdctl(&self, endpoints: &[String], args: &[&str], within: Duration) -> Output {
        let mut command = Command::new("etcdctl");
        command
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg(format!("--command-timeout={}ms", within.as_millis()))
            .arg(format!("--dial-timeout={}ms", within.as_millis()));
        let child = command
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run etcdctl ({err}); install etcd-client"));
        super::child::wait_within(child, within + Duration::from_secs(5))
    }

    /// Writes `count` keys of no one's, then compacts the history up to now: watches
    /// from an earlier revision are then refused.
    pub(crate) fn write_and_compact(&self, count: usize) {
        for i in 0..count {
            self.etcdctl(&["put", &format!("/test/filler/{i}"), "x"]);
        }
        let revision = self.status(0).expect("etcd answers")["header"]["revision"]
            .as_i64()
            .expect("a revision");
        self.etcdctl(&["compact", &revision.to_string(), "--physical"]);
    }

    /// How many `method` requests (`LeaseGrant`, say) member 0 has answered, from its
    /// metrics.
    pub(crate) fn requests(&self, method: &str) -> u64 {
        let mut stream = std::net::TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::LOCALHOST, self.members[0].metrics_port)),
            Duration::from_secs(2),
        )
        .expect("connect to etcd's metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("ask for the metrics");
        let mut metrics = String::new();
        stream
            .read_to_string(&mut metrics)
            .expect("read the metrics");
        let method = format!("grpc_method=\"{method}\"");
        metrics
            .lines()
            .filter(|line| line.starts_with("grpc_server_handled_total{") && line.contains(&method))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// What member `i` says of itself (`etcdctl endpoint status`), if it answers.
    fn status(&self, i: usize) -> Option<serde_json::Value> {
        let output = self.try_etcdctl(
            &self.endpoints()[i..=i],
            &["endpoint", "status", "-w", "json"],
            Duration::from_secs(1),
        );
        if !output.status.success() {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(value[0]["Status"].clone())
    }

    /// The member that leads the cluster now.
    pub(crate) fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            for i in 0..self.members.len() {
                if self.members[i].process.is_none() {
                    continue;
                }
                if let Some(status) = self.status(i)
                    && status["header"]["member_id"] == status["leader"]
                {
                    return i;
                }
            }
            assert!(
                start.elapsed() < READY_WITHIN,
                "no leader within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every running member answers, and the cluster a linearizable read (no
    /// write: a test of etcd's history counts its revisions).
    pub(crate) fn wait_until_ready(&self) {
        let start = Instant::now();
        let running: Vec<String> = self
            .members
            .iter()
            .zip(self.endpoints())
            .filter(|(member, _)| member.process.is_some())
            .map(|(_, endpoint)| endpoint)
            .collect();
        loop {
            let health = self.try_etcdctl(
                &running,
                &["endpoint", "health", "--cluster=false"],
                Duration::from_millis(500),
            );
            if health.status.success()
                && self
                    .try_etcdctl(&running, &["get", "/test/ready"], Duration::from_secs(1))
                    .status
                    .success()
            {
                return;
            }
            assert!(
                start.elapsed() < READY_WITHIN,
                "etcd did not answer within {READY_WITHIN:?}: {}",
                String::from_utf8_lossy(&health.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = fs::remove_dir_all(self.dir.path());
    }
}

/// A loopback TCP port that is free now.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
