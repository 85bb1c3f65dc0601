//! The examples, run as a user runs them: their output is a contract.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::support::{Killed, example, list, temp_dir, write_private};

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

/// A running `echo serve`, stopped with a signal or killed when dropped.
struct Server {
    child: Child,
    id: String,
    ticket: String,
}

impl Server {
    fn start(key: &Path) -> Self {
        let mut child = Killed::new(
            Command::new(example("echo"))
                .args(["serve".as_ref(), key.as_os_str()])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start echo serve"),
        );
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || lines.next().expect("a line").expect("read");
        let id = next()
            .strip_prefix("endpoint id: ")
            .expect("id line")
            .to_owned();
        let ticket = next()
            .strip_prefix("ticket: ")
            .expect("ticket line")
            .to_owned();
        Self {
            child: child.into_inner(),
            id,
            ticket,
        }
    }

    /// Sends `signal` (Ctrl-C is SIGINT; `systemctl stop` and `docker stop` send
    /// SIGTERM), then returns the exit status within a bound.
    #[cfg(unix)]
    fn stop(mut self, signal: libc::c_int) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "echo serve did not stop on signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

#[cfg(all(feature = "etcd", target_os = "linux"))]
#[test]
fn echo_with_etcd_waits_for_the_lease_takes_over_and_exits_when_it_is_lost() {
    use crate::lease::{Machines, skip_unless_root};

    if skip_unless_root() {
        return;
    }
    let mut etcd = crate::support::etcd::Etcd::single();
    let machines = Machines::new();
    let links = [machines.link(0, &etcd), machines.link(1, &etcd)];
    let serve = |m: usize| {
        let mut command = machines.command(m, &example("echo"));
        command
            .arg("serve")
            .arg(machines.key(m))
            .args(["--etcd", &links[m].urls().join(","), "--lease-ttl", "5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Killed::new(command.spawn().expect("start echo serve"))
    };
    let id_and_ticket = |server: &mut Killed| {
        let stdout = server.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut next = || lines.next().expect("a line").expect("read");
        let id = next()
            .strip_prefix("endpoint id: ")
            .expect("id line")
            .to_owned();
        assert!(next().starts_with("ticket: "));
        id
    };
    let mut primary = serve(0);
    assert_eq!(id_and_ticket(&mut primary), machines.id);

    let mut standby = serve(1);
    let mut standby_err = BufReader::new(standby.stderr.take().expect("stderr"));
    let mut line = String::new();
    standby_err.read_line(&mut line).expect("a line on stderr");
    assert!(
        line.starts_with("waiting for the identity lease: the identity's lease is held by"),
        "{line}"
    );

    crate::support::signal(primary.id(), libc::SIGTERM);
    assert!(primary.wait().expect("wait").success());
    assert_eq!(id_and_ticket(&mut standby), machines.id);

    // etcd gone: the holder closes its endpoint and exits with one line on stderr.
    etcd.kill_member(0);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = standby.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "echo serve kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "exited {status}");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut standby_err, &mut rest).expect("stderr");
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(lines.len(), 1, "{rest}");
    assert!(
        lines[0].starts_with("error: the identity's lease") && lines[0].contains("is lost"),
        "{rest}"
    );
    eprintln!("echo --etcd: exited {:?} after etcd died", start.elapsed());
}
