//! The examples, run as a user runs them: their output is a contract.

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::support::{example, list, process::Process, temp_dir, write_private};

fn persistent(args: &[&Path], home: &Path) -> Output {
    Command::new(example("persistent"))
        .args(args)
        .env("HOME", home)
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("run the persistent example")
}

/// Checks the two lines of `persistent` and returns the id.
fn id_line(output: &Output, key_path: &Path) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(lines.len(), 2, "{stdout}");
    let id = lines[0].strip_prefix("endpoint id: ").expect("first line");
    assert_eq!(id.len(), 64, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{id}"
    );
    assert_eq!(lines[1], format!("key file: {}", key_path.display()));
    id.to_owned()
}

#[test]
fn persistent_prints_the_same_id_on_every_run_and_exits_promptly() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let start = Instant::now();
    let first = id_line(&persistent(&[&path], dir.path()), &path);
    let elapsed = start.elapsed();
    eprintln!("persistent example, first run offline: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let second = id_line(&persistent(&[&path], dir.path()), &path);
    assert_eq!(first, second);
}

#[test]
#[cfg(all(feature = "keyring", any(target_os = "linux", windows)))]
fn persistent_keeps_its_key_in_the_keychain_when_asked() {
    let service = crate::keychain::Store::start();
    let run = || {
        let output = service
            .command(example("persistent"))
            .args(["--keychain", "persistent-example"])
            .output()
            .expect("run the persistent example");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(output.status.success(), "{output:?}");
        assert_eq!(lines.len(), 2, "{stdout}");
        assert_eq!(lines[1], "keychain entry: persistent-example/endpoint");
        let id = lines[0].strip_prefix("endpoint id: ").expect("first line");
        assert_eq!(id.len(), 64, "{id}");
        id.to_owned()
    };
    let first = run();
    assert_eq!(first, run());
    let stored = service
        .lookup("persistent-example", "endpoint")
        .expect("the entry exists");
    let (key, _) = iroh_identity::decode_key(&stored).expect("a key");
    assert_eq!(key.public().to_string(), first);
}

// `HOME` chooses it; on Windows it is the user's known folder:
// `windows::persistent_without_a_path_uses_the_local_application_data`.
#[test]
#[cfg(unix)]
fn persistent_without_a_path_uses_the_per_user_data_directory() {
    let home = temp_dir();
    let expected = home
        .path()
        .join(".local/share/iroh-identity-example/endpoint.key");
    let first = id_line(&persistent(&[], home.path()), &expected);
    assert!(expected.exists());
    assert_eq!(first, id_line(&persistent(&[], home.path()), &expected));
}

#[test]
fn persistent_reports_an_error_in_one_line_and_fails() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    write_private(&path, b"not a key");
    let output = persistent(&[&path], dir.path());
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A running `echo serve`: its process, killed when dropped, and what it printed first.
struct Server {
    #[cfg_attr(
        not(unix),
        allow(
            dead_code,
            reason = "only signalled on unix; killed when dropped everywhere"
        )
    )]
    process: Process,
    id: String,
    ticket: String,
}

impl Server {
    fn start(key: &Path) -> Self {
        let process = Process::start(
            Command::new(example("echo"))
                .args(["serve".as_ref(), key.as_os_str()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let (id, ticket) = id_and_ticket(&process);
        Self {
            process,
            id,
            ticket,
        }
    }

    /// Sends `signal` (Ctrl-C is SIGINT; `systemctl stop` and `docker stop` send
    /// SIGTERM), then returns the exit status within a bound.
    #[cfg(unix)]
    fn stop(mut self, signal: libc::c_int) -> std::process::ExitStatus {
        self.process.signal(signal);
        self.process.exits_within(Duration::from_secs(10))
    }
}

/// The id and the ticket that `echo serve` prints first, waiting for them as long as it
/// may wait for its identity.
fn id_and_ticket(server: &Process) -> (String, String) {
    let line = |prefix: &str| {
        server
            .stdout_line(Duration::from_secs(30), |line| {
                line.strip_prefix(prefix).map(str::to_owned)
            })
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("echo serve printed no {prefix:?} line"))
    };
    (line("endpoint id: "), line("ticket: "))
}

fn connect(ticket: &str, message: &str) -> Output {
    Command::new(example("echo"))
        .args(["connect", ticket, message])
        .output()
        .expect("run echo connect")
}

/// Runs `echo connect` with `ticket` and checks that `message` comes back.
fn assert_echo(ticket: &str, message: &str) {
    let output = connect(ticket, message);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{message}\n")
    );
}

#[test]
fn echo_serve_keeps_its_ticket_across_restarts_and_stops_gracefully_on_ctrl_c_and_sigterm() {
    let dir = temp_dir();
    let key = dir.path().join("server.key");

    let server = Server::start(&key);
    let (id, ticket) = (server.id.clone(), server.ticket.clone());
    assert_echo(&ticket, "hello, persistent world");
    // Windows has no signal to send a process without a console of its own: there each
    // stop is a kill (TerminateProcess), which keeps the ticket as well.
    #[cfg(unix)]
    assert!(
        server.stop(libc::SIGINT).success(),
        "echo serve did not exit cleanly on Ctrl-C"
    );
    #[cfg(windows)]
    drop(server);

    // `open` remembers the ports beside the key: the same ticket, and the old one works.
    let restarted = Server::start(&key);
    assert_eq!(restarted.id, id, "the restarted server has another id");
    assert_eq!(
        restarted.ticket, ticket,
        "the restarted server has another ticket"
    );
    assert_echo(&ticket, "again");
    drop(restarted); // SIGKILL, as in a crash.

    let after_crash = Server::start(&key);
    assert_eq!(
        after_crash.ticket, ticket,
        "the ticket changed after a crash"
    );
    assert_echo(&ticket, "after a crash");
    #[cfg(unix)]
    {
        let status = after_crash.stop(libc::SIGTERM);
        assert!(
            status.success(),
            "echo serve did not exit cleanly on SIGTERM: {status}"
        );
    }
    #[cfg(windows)]
    drop(after_crash);

    // Stopped gracefully, it released its identity and its port: the next one keeps both.
    let after_sigterm = Server::start(&key);
    assert_eq!(after_sigterm.ticket, ticket);
    assert_echo(&ticket, "after SIGTERM");
    #[cfg(unix)]
    assert!(after_sigterm.stop(libc::SIGTERM).success());
    #[cfg(windows)]
    drop(after_sigterm);
    assert_eq!(list(dir.path()), ["server.key", "server.key.ports"]);
}

/// An `echo serve` with a lease in an etcd that machine `m` reaches through `link`, as
/// `command` (machine `m`'s user, in its namespace) runs it, with `args` added.
#[cfg(all(feature = "etcd", target_os = "linux"))]
fn echo_serve(
    machines: &crate::lease::Machines,
    m: usize,
    link: &crate::lease::Link,
    args: &[&str],
    env: &[(&str, &str)],
) -> Process {
    let mut command = machines.command(m, &example("echo"));
    command
        .envs(env.iter().copied())
        .arg("serve")
        .arg(machines.key(m))
        .args(["--etcd", &link.urls().join(","), "--lease-ttl", "5"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Process::start(&mut command)
}

/// Waits up to `limit` for `server` to exit; after that, kills it: the status then says
/// so.
#[cfg(all(feature = "etcd", target_os = "linux"))]
fn exit_within(server: &mut Process, limit: Duration) -> std::process::ExitStatus {
    server.exit_within(limit).unwrap_or_else(|| {
        server.kill();
        server.exited().expect("reaped")
    })
}

/// The first line that `server` writes on stderr.
#[cfg(all(feature = "etcd", target_os = "linux"))]
fn first_log_line(server: &Process) -> String {
    server
        .stderr_line(Duration::from_secs(30), |line| Some(line.to_owned()))
        .expect("a line on stderr")
}

/// The README's production setup: etcd with TLS, client certificates and authentication,
/// given with etcdctl's flags, the password in `ETCD_PASSWORD`.
#[cfg(all(feature = "etcd", target_os = "linux"))]
#[test]
fn echo_with_etcd_over_tls_and_auth_waits_for_the_lease_takes_over_and_exits_when_it_is_lost() {
    use std::os::unix::process::ExitStatusExt;

    use crate::{
        lease::{Machines, skip_unless_root},
        support::etcd::{Certificates, LEASE_USER, Options},
    };

    if skip_unless_root() {
        return;
    }
    let machines = Machines::new();
    let certificates = Certificates::new(&machines.service_addresses());
    let mut etcd = Options::members(1).tls(&certificates).start();
    etcd.enable_auth("/iroh-identity/");
    let links = machines.links(&etcd);
    let (ca, cert, key) = (
        certificates.path("ca.pem"),
        certificates.path("client.pem"),
        certificates.path("client.key"),
    );
    let tls_and_auth = [
        "--etcd-cacert",
        ca.to_str().expect("UTF-8"),
        "--etcd-cert",
        cert.to_str().expect("UTF-8"),
        "--etcd-key",
        key.to_str().expect("UTF-8"),
        "--etcd-user",
        LEASE_USER.0,
    ];
    // The password comes from the environment, never the command line.
    let serve = |m: usize| {
        echo_serve(
            &machines,
            m,
            &links[m],
            &tls_and_auth,
            &[("ETCD_PASSWORD", LEASE_USER.1)],
        )
    };
    let mut primary = serve(0);
    assert_eq!(id_and_ticket(&primary).0, machines.id);

    let standby = serve(1);
    let line = first_log_line(&standby);
    assert!(
        line.starts_with("waiting for the identity lease: the identity's lease is held by"),
        "{line}"
    );

    primary.terminate();
    assert!(primary.exits_within(Duration::from_secs(10)).success());
    assert_eq!(id_and_ticket(&standby).0, machines.id);

    // etcd gone: the holder closes its endpoint and exits with one line on stderr.
    etcd.kill_member(0);
    let start = Instant::now();
    let (status, _, stderr) = standby.finish(Some(Duration::from_secs(10)));
    let stderr = String::from_utf8_lossy(&stderr);
    // What it said after its first line, the wait.
    let rest: String = stderr
        .lines()
        .skip(1)
        .map(|line| format!("{line}\n"))
        .collect();
    assert!(
        !status.success() && status.signal().is_none(),
        "{status} (killed: it kept running {:?} after etcd died): {rest}",
        start.elapsed()
    );
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 1, "{rest}");
    assert!(
        lines[0].starts_with("error: the identity's lease") && lines[0].contains("is lost"),
        "{rest}"
    );
    eprintln!("echo --etcd: exited {:?} after etcd died", start.elapsed());
}

/// Finding 9: SIGTERM is handled from the start, before the lease is taken: a waiting
/// server stops cleanly, and one stopped as it takes over lets the lease go.
#[cfg(all(feature = "etcd", target_os = "linux"))]
#[test]
fn echo_with_etcd_stops_cleanly_on_sigterm_while_it_waits_and_as_it_takes_over() {
    use crate::lease::{Machines, skip_unless_root};

    if skip_unless_root() {
        return;
    }
    let etcd = crate::support::etcd::Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let mut primary = echo_serve(&machines, 0, &links[0], &[], &[]);
    assert_eq!(id_and_ticket(&primary).0, machines.id);

    let mut waiting = echo_serve(&machines, 1, &links[1], &[], &[]);
    let line = first_log_line(&waiting);
    assert!(
        line.starts_with("waiting for the identity lease: the identity's lease is held by"),
        "{line}"
    );
    waiting.terminate();
    let status = exit_within(&mut waiting, Duration::from_secs(5));
    assert!(
        status.success(),
        "a waiting server stopped by SIGTERM: {status}"
    );

    // Stopped in the instant it takes over: whatever it took, it lets go.
    let mut standby = echo_serve(&machines, 1, &links[1], &[], &[]);
    first_log_line(&standby);
    primary.terminate();
    standby.terminate();
    assert!(exit_within(&mut primary, Duration::from_secs(10)).success());
    let status = exit_within(&mut standby, Duration::from_secs(10));
    assert!(status.success(), "stopped as it took over: {status}");
    let stopped = Instant::now();
    let next = echo_serve(&machines, 0, &links[0], &[], &[]);
    assert_eq!(id_and_ticket(&next).0, machines.id);
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the next server waited {took:?}: the lease was left to expire"
    );
}
