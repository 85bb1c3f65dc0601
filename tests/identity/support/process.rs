//! The one type that owns a child process of a test: it reads what the child prints on
//! threads of its own, signals and stops it, waits for it with a deadline, and kills it
//! when dropped, on every way out of a test (a failed assertion included).

use std::{
    io::{self, BufRead, BufReader, Read},
    process::{Child, Command, ExitStatus},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::now_ms;

/// A running child, killed (and reaped) when dropped.
pub(crate) struct Process {
    child: Child,
    /// Set once the child is reaped.
    status: Option<ExitStatus>,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    readers: Vec<JoinHandle<()>>,
}

/// What a child printed on one stream so far, line by line, each with when it arrived.
#[derive(Default)]
struct Lines {
    said: Mutex<Said>,
    more: Condvar,
}

#[derive(Default)]
struct Said {
    lines: Vec<(Instant, Vec<u8>)>,
    /// The stream ended: the child closed it or exited.
    ended: bool,
}

impl Lines {
    /// Reads `stream` to its end on a thread of its own.
    fn read(stream: impl Read + Send + 'static) -> (Arc<Self>, JoinHandle<()>) {
        let lines = Arc::new(Self::default());
        let shared = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            let mut stream = BufReader::new(stream);
            loop {
                let mut line = Vec::new();
                let read = stream.read_until(b'\n', &mut line).unwrap_or(0);
                let mut said = shared.said.lock().expect("not poisoned");
                if read == 0 {
                    said.ended = true;
                } else {
                    said.lines.push((Instant::now(), line));
                }
                shared.more.notify_all();
                if read == 0 {
                    return;
                }
            }
        });
        (lines, reader)
    }

    /// A stream that is not piped: nothing to read, ended from the start.
    fn none() -> Arc<Self> {
        let lines = Self::default();
        lines.said.lock().expect("not poisoned").ended = true;
        Arc::new(lines)
    }

    /// The first line that `pick` takes, with when it arrived: waiting up to `limit` while
    /// the stream lasts.
    fn find<T>(&self, limit: Duration, pick: impl Fn(&str) -> Option<T>) -> Option<(Instant, T)> {
        let deadline = Instant::now() + limit;
        let mut said = self.said.lock().expect("not poisoned");
        loop {
            let found = said.lines.iter().find_map(|(at, line)| {
                pick(String::from_utf8_lossy(line).trim_end_matches('\n')).map(|value| (*at, value))
            });
            let left = deadline.saturating_duration_since(Instant::now());
            if found.is_some() || said.ended || left.is_zero() {
                return found;
            }
            said = self.more.wait_timeout(said, left).expect("not poisoned").0;
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let said = self.said.lock().expect("not poisoned");
        said.lines
            .iter()
            .flat_map(|(_, line)| line.clone())
            .collect()
    }
}

impl Process {
    /// Starts `command`, or fails the test; what it pipes (stdout, stderr) is read from
    /// now on.
    pub(crate) fn start(command: &mut Command) -> Self {
        Self::try_start(command)
            .unwrap_or_else(|err| panic!("cannot start {:?}: {err}", command.get_program()))
    }

    /// The same, with the error. A program that is busy (just copied, `ETXTBSY`) is
    /// started again for 5 s.
    pub(crate) fn try_start(command: &mut Command) -> io::Result<Self> {
        let start = Instant::now();
        let mut child = loop {
            match command.spawn() {
                Err(err)
                    if err.kind() == io::ErrorKind::ExecutableFileBusy
                        && start.elapsed() < Duration::from_secs(5) =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                spawned => break spawned?,
            }
        };
        let mut readers = Vec::new();
        let mut read = |stream: Option<Box<dyn Read + Send>>| match stream {
            Some(stream) => {
                let (lines, reader) = Lines::read(stream);
                readers.push(reader);
                lines
            }
            None => Lines::none(),
        };
        let stdout = read(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let stderr = read(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        Ok(Self {
            child,
            status: None,
            stdout,
            stderr,
            readers,
        })
    }

    #[cfg(unix)]
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stdin, where it was piped; once only.
    #[cfg(all(feature = "keyring", target_os = "linux"))]
    pub(crate) fn stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().expect("a piped stdin, taken once")
    }

    /// Sends `signal`, unless it was reaped already (its pid may be another's by then).
    #[cfg(unix)]
    pub(crate) fn signal(&self, signal: libc::c_int) {
        if self.status.is_none() {
            super::signal(self.pid(), signal);
        }
    }

    /// Asks it to stop (SIGTERM), as `systemctl stop` and `docker stop` do; returns at once.
    #[cfg(unix)]
    pub(crate) fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGKILL (after a SIGCONT, should it be stopped; on Windows, `TerminateProcess`), and
    /// the wall-clock time it was sent: no close, no clean-up, as in a crash. Returns once
    /// it is reaped.
    pub(crate) fn kill(&mut self) -> u64 {
        let at = now_ms();
        if self.status.is_none() {
            #[cfg(unix)]
            self.signal(libc::SIGCONT);
            let _ = self.child.kill();
            self.status = Some(self.child.wait().expect("reap a child"));
        }
        at
    }

    /// Its exit status, if it has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("poll a child");
        }
        self.status
    }

    /// Waits up to `limit` for it to exit by itself: its status, or `None` if it still
    /// runs.
    pub(crate) fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits up to `limit` for it to exit by itself, or fails the test, showing what it
    /// printed on stderr.
    #[cfg(unix)]
    pub(crate) fn exits_within(&mut self, limit: Duration) -> ExitStatus {
        match self.exit_within(limit) {
            Some(status) => status,
            None => panic!(
                "the child did not exit within {limit:?}; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    /// The first line of stdout that `pick` takes, with when it arrived: waiting up to
    /// `limit` while stdout lasts.
    pub(crate) fn stdout_line<T>(
        &self,
        limit: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> Option<(Instant, T)> {
        self.stdout.find(limit, pick)
    }

    /// The first line of stderr that `pick` takes: waiting up to `limit` while stderr
    /// lasts.
    #[cfg(all(feature = "etcd", target_os = "linux"))]
    pub(crate) fn stderr_line<T>(
        &self,
        limit: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        self.stderr.find(limit, pick).map(|(_, found)| found)
    }

    /// Every line it printed on stdout so far.
    pub(crate) fn stdout_lines(&self) -> Vec<String> {
        let said = self.stdout.said.lock().expect("not poisoned");
        said.lines
            .iter()
            .map(|(_, line)| {
                String::from_utf8_lossy(line)
                    .trim_end_matches('\n')
                    .to_owned()
            })
            .collect()
    }

    /// All it printed on stderr so far.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.bytes()).into_owned()
    }

    /// Waits for it to exit (killing it once `limit` has passed, if one is given), and for
    /// its streams to end: its status and all it printed on stdout and stderr.
    pub(crate) fn finish(mut self, limit: Option<Duration>) -> (ExitStatus, Vec<u8>, Vec<u8>) {
        let status = match limit {
            Some(limit) => match self.exit_within(limit) {
                Some(status) => status,
                None => {
                    self.kill();
                    self.status.expect("reaped")
                }
            },
            None => {
                let status = self.child.wait().expect("wait for a child");
                self.status = Some(status);
                status
            }
        };
        // The streams end with the child, unless a grandchild still holds them.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.stdout.bytes(), self.stderr.bytes())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Its readers end with its streams: not waited for, since a grandchild may hold
        // them.
        self.kill();
    }
}
