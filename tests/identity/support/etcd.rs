//! Real etcd for the lease tests: one member or a cluster of three, on loopback ports, in
//! a temporary directory, started here and killed when the value is dropped.
//!
//! The members run with a short heartbeat and election timeout (10 ms, 100 ms), so that
//! a cluster is up, and elects a new leader, within a fraction of a second.

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The package that gives `etcd` (`.ci/run` installs it).
const PACKAGE: &str = "etcd-server";

/// How long a cluster may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// An etcd cluster of one or more members.
pub(crate) struct Etcd {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
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
                data_dir: dir.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let mut etcd = Self { members, _dir: dir };
        for i in 0..size {
            etcd.start_member(i);
        }
        etcd.wait_until_ready();
        etcd
    }

    /// The client URLs of every member.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| format!("http://127.0.0.1:{}", member.client_port))
            .collect()
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
        let process = Command::new("etcd")
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
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("cannot start etcd ({err}); install {PACKAGE}, as .ci/run does")
            });
        member.process = Some(process);
    }

    /// Kills member `i` (SIGKILL) and waits until it is gone.
    pub(crate) fn kill_member(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Writes `count` keys of no one's, then compacts the history up to now: watches
    /// from an earlier revision are then refused.
    pub(crate) fn write_and_compact(&self, count: usize) {
        block_on(async {
            let mut client = etcd_client::Client::connect(self.endpoints(), None)
                .await
                .expect("connect to etcd");
            let mut revision = 0;
            for i in 0..count {
                let put = client
                    .put(format!("/test/filler/{i}"), "x", None)
                    .await
                    .expect("put");
                revision = put.header().expect("a header").revision();
            }
            client
                .compact(
                    revision,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
                .expect("compact");
        })
    }

    /// How many `method` requests (`LeaseGrant`, say) member 0 has answered, from its
    /// metrics.
    pub(crate) fn requests(&self, method: &str) -> u64 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.members[0].client_port))
            .expect("connect to etcd's metrics");
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

    /// The member that leads the cluster now.
    pub(crate) fn leader(&self) -> usize {
        block_on(async {
            let start = Instant::now();
            loop {
                for (i, endpoint) in self.endpoints().iter().enumerate() {
                    let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await
                    else {
                        continue;
                    };
                    let status =
                        tokio::time::timeout(Duration::from_secs(1), client.status()).await;
                    if let Ok(Ok(status)) = status
                        && status
                            .header()
                            .is_some_and(|header| header.member_id() == status.leader())
                    {
                        return i;
                    }
                }
                assert!(
                    start.elapsed() < READY_WITHIN,
                    "no leader within {READY_WITHIN:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Waits until the cluster answers a write.
    pub(crate) fn wait_until_ready(&self) {
        block_on(async {
            let start = Instant::now();
            loop {
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(500))
                    .with_timeout(Duration::from_millis(500));
                if let Ok(mut client) =
                    etcd_client::Client::connect(self.endpoints(), Some(options)).await
                    && client.put("/test/ready", "yes", None).await.is_ok()
                {
                    return;
                }
                assert!(
                    start.elapsed() < READY_WITHIN,
                    "etcd did not answer within {READY_WITHIN:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(process) = &self.members[i].process {
                // A paused member dies of SIGKILL all the same.
                super::signal(process.id(), libc::SIGCONT);
            }
            self.kill_member(i);
        }
        for member in &self.members {
            let _ = fs::remove_dir_all(&member.data_dir);
        }
    }
}

/// Runs `future` to its end on a runtime of its own, on a thread of its own: callable from
/// tests that are async and tests that are not.
fn block_on<T: Send>(future: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(future)
            })
            .join()
            .expect("the etcd client's thread")
    })
}

/// A loopback TCP port that is free now.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
