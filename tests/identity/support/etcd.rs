//! Real etcd for the lease tests: one member or a cluster of three, on loopback ports, in
//! a temporary directory, started here and killed when the value is dropped; and
//! `etcdctl` for what an operator does to it.
//!
//! The members run with a short heartbeat and election timeout (10 ms, 100 ms), so that
//! a cluster is up, and elects a new leader, within a fraction of a second, unless
//! [`Options::default_election`] asks for etcd's own (100 ms, 1 s). With [`Options::tls`]
//! they serve TLS only and ask every client for a certificate of the test's CA
//! ([`Certificates`], made with the real `openssl`); [`Etcd::enable_auth`] turns on
//! authentication, with a user that may write only the lease's prefix.
//!
//! Machines reach etcd through a [`Proxy`] each, on their side of the host (see
//! [`crate::support::net`]): etcd itself listens on loopback only.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{process::Process, proxy::Proxy};

/// The package that gives `etcd` (`cargo xtask test` installs it).
const PACKAGE: &str = "etcd-server";

/// How long a cluster may take to answer.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// The user a lease authenticates as when authentication is on, and its password.
pub(crate) const LEASE_USER: (&str, &str) = ("iroh", "lease-password");

/// etcd's root user, for the test's own `etcdctl` calls once authentication is on.
const ROOT: (&str, &str) = ("root", "root-password");

/// How a cluster is started.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    members: usize,
    default_election: bool,
    tls: Option<Certificates>,
}

impl Options {
    /// `members` members.
    pub(crate) fn members(members: usize) -> Self {
        Self {
            members,
            ..Self::default()
        }
    }

    /// etcd's own heartbeat (100 ms) and election timeout (1 s), not the suite's short ones.
    pub(crate) fn default_election(mut self) -> Self {
        self.default_election = true;
        self
    }

    /// TLS only, with client certificates of `certificates`' CA.
    pub(crate) fn tls(mut self, certificates: &Certificates) -> Self {
        self.tls = Some(certificates.clone());
        self
    }

    pub(crate) fn start(self) -> Etcd {
        Etcd::start(self)
    }
}

/// An etcd cluster of one or more members.
pub(crate) struct Etcd {
    options: Options,
    members: Vec<Member>,
    /// Set once authentication is on: `etcdctl` then logs in as root.
    auth: bool,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    data_dir: PathBuf,
    process: Option<Process>,
}

impl Etcd {
    /// A single member.
    pub(crate) fn single() -> Self {
        Options::members(1).start()
    }

    fn start(options: Options) -> Self {
        let dir = super::temp_dir();
        let members: Vec<Member> = (0..options.members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let mut etcd = Self {
            options,
            members,
            auth: false,
            dir,
        };
        for i in 0..etcd.members.len() {
            etcd.start_member(i);
        }
        etcd.wait_until_ready();
        etcd
    }

    fn scheme(&self) -> &'static str {
        if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client URLs of every member, on loopback: the test's own.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| format!("{}://127.0.0.1:{}", self.scheme(), member.client_port))
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
        format!("{}://{}", self.scheme(), proxy.addr())
    }

    /// Starts member `i` (again, on its data directory: a restart keeps its leases; on an
    /// empty one, it starts a new cluster's history).
    pub(crate) fn start_member(&mut self, i: usize) {
        self.kill_member(i);
        let scheme = self.scheme();
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let (heartbeat, election) = if self.options.default_election {
            ("100", "1000")
        } else {
            ("10", "100")
        };
        let member = &mut self.members[i];
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
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
            .args(["--heartbeat-interval", heartbeat])
            .args(["--election-timeout", election])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(tls) = &self.options.tls {
            command
                .arg("--cert-file")
                .arg(tls.path("server.pem"))
                .arg("--key-file")
                .arg(tls.path("server.key"))
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(tls.path("ca.pem"));
        }
        let process = Process::try_start(&mut command).unwrap_or_else(|err| {
            panic!("cannot start etcd ({err}); install {PACKAGE}, as `cargo xtask test` does")
        });
        member.process = Some(process);
    }

    /// Kills member `i` (SIGKILL) and waits until it is gone.
    pub(crate) fn kill_member(&mut self, i: usize) {
        if let Some(mut process) = self.members[i].process.take() {
            process.kill();
        }
    }

    /// Kills member `i`, deletes its data, and starts it again on nothing: the cluster
    /// (of one member) has lost everything, and starts a new history under the same
    /// cluster id.
    pub(crate) fn wipe_member(&mut self, i: usize) {
        self.kill_member(i);
        fs::remove_dir_all(&self.members[i].data_dir).expect("delete the member's data");
        self.start_member(i);
        self.wait_until_ready();
    }

    /// Saves a snapshot of the cluster's data to `path` (`etcdctl snapshot save`).
    pub(crate) fn save_snapshot(&self, path: &Path) {
        let path = path.to_str().expect("a UTF-8 path");
        self.etcdctl_on(&self.endpoints()[..1], &["snapshot", "save", path]);
    }

    /// Stops a one-member cluster and restores it from the snapshot at `path`
    /// (`etcdctl snapshot restore` into a new data directory), as an operator recovering
    /// from a backup does, then starts it.
    pub(crate) fn restore_snapshot(&mut self, path: &Path) {
        assert_eq!(self.members.len(), 1, "restores a one-member cluster");
        self.kill_member(0);
        let member = &self.members[0];
        fs::remove_dir_all(&member.data_dir).expect("delete the member's data");
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let output = Command::new("etcdctl")
            .args(["snapshot", "restore"])
            .arg(path)
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args(["--name", &member.name])
            .args(["--initial-cluster", &format!("{}={peer}", member.name)])
            .args(["--initial-cluster-token", "test"])
            .args(["--initial-advertise-peer-urls", &peer])
            .output()
            .expect("run etcdctl snapshot restore");
        assert!(
            output.status.success(),
            "etcdctl snapshot restore: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        self.start_member(0);
        self.wait_until_ready();
    }

    /// Turns on authentication: a root user, and `LEASE_USER` with a role that may read and
    /// write only the keys under `prefix`.
    pub(crate) fn enable_auth(&mut self, prefix: &str) {
        let user = format!("{}:{}", LEASE_USER.0, LEASE_USER.1);
        let root = format!("{}:{}", ROOT.0, ROOT.1);
        for args in [
            &["user", "add", &root][..],
            &["role", "add", "lease"],
            &[
                "role",
                "grant-permission",
                "lease",
                "readwrite",
                "--prefix=true",
                prefix,
            ],
            &["user", "add", &user],
            &["user", "grant-role", LEASE_USER.0, "lease"],
            &["auth", "enable"],
        ] {
            self.etcdctl(args);
        }
        self.auth = true;
    }

    /// Runs `etcdctl ARGS` against every member as an operator (root, when authentication
    /// is on); fails the test if it fails. Returns its stdout.
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
        if let Some(tls) = &self.options.tls {
            command
                .arg("--cacert")
                .arg(tls.path("ca.pem"))
                .arg("--cert")
                .arg(tls.path("client.pem"))
                .arg("--key")
                .arg(tls.path("client.key"));
        }
        if self.auth {
            command.arg(format!("--user={}:{}", ROOT.0, ROOT.1));
        }
        let process = Process::try_start(
            command
                .args(args)
                .env("ETCDCTL_API", "3")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .unwrap_or_else(|err| panic!("cannot run etcdctl ({err}); install etcd-client"));
        // Killed if it takes longer: the status then says so.
        let (status, stdout, stderr) = process.finish(Some(within + Duration::from_secs(5)));
        Output {
            status,
            stdout,
            stderr,
        }
    }

    /// The lease that `key` is bound to now (0: none, or no such key).
    pub(crate) fn lease_of(&self, key: &str) -> i64 {
        let json = self.etcdctl(&["get", key, "-w", "json"]);
        let value: serde_json::Value = serde_json::from_str(&json).expect("etcdctl's JSON");
        value["kvs"][0]["lease"].as_i64().unwrap_or(0)
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

/// A CA, a server certificate for etcd, a client certificate of the CA for the lease, and
/// a second CA that signed none of them: made with `openssl` in a temporary directory.
#[derive(Debug, Clone)]
pub(crate) struct Certificates {
    dir: std::sync::Arc<tempfile::TempDir>,
}

impl Certificates {
    /// Certificates for a server reached at 127.0.0.1 and at each of `addresses`.
    pub(crate) fn new(addresses: &[Ipv4Addr]) -> Self {
        let dir = std::sync::Arc::new(super::temp_dir());
        let at = |name: &str| dir.path().join(name);
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=iroh-identity test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                path_str(&at(&format!("{ca}.key"))),
                "-out",
                path_str(&at(&format!("{ca}.pem"))),
            ]);
        }
        let mut names = vec!["IP:127.0.0.1".to_owned()];
        names.extend(addresses.iter().map(|address| format!("IP:{address}")));
        for (name, usage, alt) in [
            ("server", "serverAuth", names.join(",")),
            ("client", "clientAuth", String::new()),
        ] {
            let mut extensions = format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\n"
            );
            if !alt.is_empty() {
                extensions += &format!("subjectAltName={alt}\n");
            }
            fs::write(at(&format!("{name}.ext")), extensions).expect("write extensions");
            openssl(&[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                path_str(&at(&format!("{name}.key"))),
                "-out",
                path_str(&at(&format!("{name}.csr"))),
            ]);
            openssl(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-set_serial",
                "1",
                "-in",
                path_str(&at(&format!("{name}.csr"))),
                "-CA",
                path_str(&at("ca.pem")),
                "-CAkey",
                path_str(&at("ca.key")),
                "-extfile",
                path_str(&at(&format!("{name}.ext"))),
                "-out",
                path_str(&at(&format!("{name}.pem"))),
            ]);
        }
        // The lease's children run as other users: they read the client's files too.
        for entry in fs::read_dir(dir.path()).expect("list the certificates") {
            let path = entry.expect("an entry").path();
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { dir }
    }

    /// One of the files: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key`,
    /// `other-ca.pem`.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback TCP port that is free now.
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}
