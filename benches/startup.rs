//! What persistence costs at start-up, each figure side by side with its baseline in one
//! run. `cargo bench --bench startup` runs it all (a few minutes) and ends with a table
//! of the ratios of medians; RELIABILITY.md reports them (*What it costs*).
//!
//! 1. Opening with an existing key vs iroh's bare bind with the key in memory; the
//!    ratio comes from a run that alternates the two (see [`paired_open`]), which also
//!    times a bare bind that first makes its key from 32 bytes.
//! 2. Taking the identity (location and permission checks, read, parse, lock), per
//!    format, vs reading a raw 32-byte file and `SecretKey::from_bytes`.
//! 3. A first run (generate, durable publish, bind) vs a steady-state open, and the part
//!    of the difference that is the two `fsync`s.
//! 4. N processes racing to create the same missing key, N = 1, 4, 16, 64, each taking
//!    the identity in turn, vs as many processes taking an identity whose key exists.
//! 5. Opening with stable addressing binding the remembered ports vs iroh's bare bind,
//!    both on all interfaces; alternated like 1.
//! 6. With `--features etcd` and `etcd` on the path: taking and letting go of the
//!    identity with an etcd lease (a single member on loopback, started here) vs with
//!    the host's lock alone.
//! 7. A whole process, start to exit, doing what `examples/persistent.rs` does with an
//!    existing key file vs the program of iroh's docs (read 32 raw bytes, bind with
//!    `presets::N0`, print the id); alternated, see [`paired_process`].
//!
//! Everything but 7 uses `presets::Minimal` (no network, no n0 services) and binds to
//! 127.0.0.1, except 5, which binds iroh's default sockets on all interfaces. Opens run
//! with every default, stable addressing included: on loopback there are no ports on all
//! interfaces to remember, so it costs the look for a ports file.

use std::{
    fs,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use criterion::{BatchSize, Criterion};
use iroh::{
    Endpoint, SecretKey,
    endpoint::{self, presets},
};
use iroh_identity::{Identity, KeyFormat, encode_key, store_new_key};
use tokio::runtime::Runtime;

/// Set in a child process: create or load the key at this path, and exit.
const CHILD_KEY_PATH: &str = "IROH_IDENTITY_BENCH_CHILD";

/// Set in a child process: be `examples/persistent.rs` with this key path.
const CHILD_PERSISTENT: &str = "IROH_IDENTITY_BENCH_PERSISTENT";

/// Set in a child process: be the program of iroh's docs, with this raw key file.
const CHILD_SNIPPET: &str = "IROH_IDENTITY_BENCH_SNIPPET";

const FORMATS: [(&str, KeyFormat); 7] = [
    ("pkcs8-pem", KeyFormat::Pkcs8Pem),
    ("pkcs8-v1-pem", KeyFormat::Pkcs8PemV1),
    ("pkcs8-der", KeyFormat::Pkcs8Der),
    ("openssh", KeyFormat::OpenSsh),
    ("raw", KeyFormat::Raw),
    ("hex", KeyFormat::Hex),
    ("base32", KeyFormat::Base32),
];

const RACERS: [usize; 4] = [1, 4, 16, 64];

/// How many times each side opens in [`paired_open`].
const OPEN_PAIRS: usize = 2000;

/// How many processes each side starts in [`paired_process`].
const PROCESS_PAIRS: usize = 60;

fn main() {
    if let Some(path) = std::env::var_os(CHILD_KEY_PATH) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
        let identity = runtime
            .block_on(Identity::open(&path))
            .expect("child: take the identity");
        println!("{}", identity.id());
        return;
    }
    if let Some(path) = std::env::var_os(CHILD_PERSISTENT) {
        runtime().block_on(async {
            let endpoint = Identity::builder(Path::new(&path))
                .bind()
                .await
                .expect("persistent: bind");
            println!("endpoint id: {}", endpoint.id());
            println!("key file: {}", Path::new(&path).display());
            endpoint.close().await;
        });
        return;
    }
    if let Some(path) = std::env::var_os(CHILD_SNIPPET) {
        runtime().block_on(async {
            let bytes = fs::read(&path).expect("snippet: read the key");
            let key = SecretKey::from_bytes(&bytes.as_slice().try_into().expect("32 bytes"));
            let endpoint = Endpoint::builder(presets::N0)
                .secret_key(key)
                .bind()
                .await
                .expect("snippet: bind");
            println!("our endpoint id: {}", endpoint.id());
            endpoint.close().await;
        });
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut criterion = Criterion::default()
        .output_directory(&results_dir())
        .configure_from_args();
    open_vs_bare_bind(&mut criterion, dir.path());
    key_load_vs_raw_read(&mut criterion, dir.path());
    first_run_vs_steady_state(&mut criterion, dir.path());
    concurrent_first_runs(&mut criterion, dir.path());
    #[cfg(feature = "etcd")]
    lease::lease_vs_host_lock(&mut criterion, dir.path());
    criterion.final_summary();
    let paired = paired_open(dir.path(), OPEN_PAIRS, false);
    let stable = paired_open(dir.path(), OPEN_PAIRS, true);
    let process = paired_process(dir.path(), PROCESS_PAIRS);
    report(paired, stable, process);
}

/// Where criterion keeps its estimates, so that [`report`] can read them back.
fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The same bind options for both sides: loopback only.
fn loopback(builder: endpoint::Builder) -> endpoint::Builder {
    builder
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .expect("valid socket address")
}

/// What a user of this crate does: open the key at `path` and bind; then close. On
/// loopback, or on all interfaces as `PersistentEndpoint::open` does, where stable
/// addressing binds the remembered ports.
async fn open_and_close(path: &Path, all_interfaces: bool) {
    let mut builder = Identity::builder(path).preset(presets::Minimal);
    if !all_interfaces {
        builder = builder.configure(loopback);
    }
    let endpoint = builder.bind().await.expect("open");
    endpoint.close().await;
}

/// A key file at `path`, as a first run leaves it.
fn new_key(path: &Path) -> SecretKey {
    let key = SecretKey::generate();
    store_new_key(path, &key, KeyFormat::Pkcs8Pem).expect("store a key");
    key
}

/// What iroh alone does with the key in memory: bind; then close. On loopback, or on
/// all interfaces as iroh does by default.
async fn bind_and_close(key: &SecretKey, all_interfaces: bool) {
    let mut builder = Endpoint::builder(presets::Minimal);
    if !all_interfaces {
        builder = loopback(builder);
    }
    let endpoint = builder.secret_key(key.clone()).bind().await.expect("bind");
    endpoint.close().await;
}

/// Writes a key file as a user would have it: private.
fn write_key(path: &Path, content: &[u8]) {
    let mut file = fs::File::create(path).expect("create key file");
    file.write_all(content).expect("write key file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn open_vs_bare_bind(criterion: &mut Criterion, dir: &Path) {
    let runtime = runtime();
    let path = dir.join("open.key");
    let key = new_key(&path);
    let mut group = criterion.benchmark_group("open");
    group.bench_function("bare-bind", |b| {
        b.iter(|| runtime.block_on(bind_and_close(&key, false)))
    });
    group.bench_function("persistent", |b| {
        b.iter(|| runtime.block_on(open_and_close(&path, false)))
    });
    group.finish();
}

/// Opens with an existing key and binds bare, in alternation, `pairs` times each, and
/// returns the medians in nanoseconds: of the open, of the bare bind with the key in
/// memory, and of the bare bind with a key made from its 32 bytes first
/// (`SecretKey::from_bytes`, which derives the public key, as any program that keeps its
/// key must once). Run back to back, criterion's two benchmarks of 1 ms binds drift apart
/// by more than the 5 % being measured; alternating makes any drift of the machine hit
/// every side alike. With `stable`, the open uses stable addressing and every side binds
/// on all interfaces.
fn paired_open(dir: &Path, pairs: usize, stable: bool) -> (f64, f64, f64) {
    let runtime = runtime();
    let path = dir.join(if stable { "stable.key" } else { "paired.key" });
    let key = new_key(&path);
    let bytes = key.to_bytes();
    let mut samples: [Vec<f64>; 3] = Default::default();
    for pair in 0..pairs {
        runtime.block_on(async {
            // Rotate which goes first, too.
            for turn in 0..3 {
                let side = (pair + turn) % 3;
                let start = Instant::now();
                match side {
                    0 => open_and_close(&path, stable).await,
                    1 => bind_and_close(&key, stable).await,
                    _ => bind_and_close(&SecretKey::from_bytes(&bytes), stable).await,
                }
                samples[side].push(start.elapsed().as_nanos() as f64);
            }
        });
    }
    let [opens, binds, derived] = samples.map(median_of);
    (opens, binds, derived)
}

/// Starts this program as `examples/persistent.rs` on an existing key and as the program
/// of iroh's docs, in alternation, `pairs` times each, and returns each side's median
/// wall time (from spawn to exit) and CPU time (user and system, from the kernel's
/// account of the child), in nanoseconds: `[persistent, docs]`. Both sides are this one
/// binary, so loading it costs both the same; both bind with `presets::N0` on all
/// interfaces, as the programs do.
fn paired_process(dir: &Path, pairs: usize) -> [(f64, f64); 2] {
    let exe = std::env::current_exe().expect("this program's path");
    let persistent_key = dir.join("process.key");
    new_key(&persistent_key);
    let snippet_key = dir.join("process.raw");
    write_key(&snippet_key, &SecretKey::generate().to_bytes());
    let sides = [
        (CHILD_PERSISTENT, &persistent_key),
        (CHILD_SNIPPET, &snippet_key),
    ];
    // Each side once first: the persistent side remembers its ports on its first run.
    for (variable, path) in sides {
        time_process(&exe, variable, path);
    }
    let mut samples: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for pair in 0..pairs {
        for turn in 0..2 {
            let side = (pair + turn) % 2;
            let (variable, path) = sides[side];
            let (wall, cpu) = time_process(&exe, variable, path);
            samples[side].0.push(wall);
            samples[side].1.push(cpu);
        }
    }
    samples.map(|(wall, cpu)| (median_of(wall), median_of(cpu)))
}

/// Runs this program with `variable` set to `path`; returns its wall and CPU time in
/// nanoseconds.
fn time_process(exe: &Path, variable: &str, path: &Path) -> (f64, f64) {
    let before = children_cpu();
    let start = Instant::now();
    let status = Command::new(exe)
        .env(variable, path)
        .stdout(Stdio::null())
        .status()
        .expect("run a child");
    let wall = start.elapsed().as_nanos() as f64;
    assert!(status.success(), "{variable} child failed: {status}");
    (wall, children_cpu() - before)
}

/// The CPU time, user and system, of every child waited for so far, in nanoseconds.
fn children_cpu() -> f64 {
    // SAFETY: an all-zero `rusage` is a valid value for the kernel to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer is to a live local.
    let done = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(done, 0, "getrusage: {}", std::io::Error::last_os_error());
    let nanos = |time: libc::timeval| time.tv_sec as f64 * 1e9 + time.tv_usec as f64 * 1e3;
    nanos(usage.ru_utime) + nanos(usage.ru_stime)
}

fn median_of(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn key_load_vs_raw_read(criterion: &mut Criterion, dir: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
    let key = SecretKey::generate();
    let mut group = criterion.benchmark_group("key-load");
    let raw_path = dir.join("baseline.raw");
    write_key(&raw_path, &key.to_bytes());
    group.bench_function("raw-read", |b| {
        b.iter(|| {
            let bytes = fs::read(&raw_path).expect("read");
            let bytes: [u8; 32] = bytes.as_slice().try_into().expect("32 bytes");
            SecretKey::from_bytes(&bytes)
        })
    });
    for (name, format) in FORMATS {
        let path = dir.join(format!("load.{name}"));
        write_key(&path, &encode_key(&key, format));
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(Identity::open(&path))
                    .expect("take the identity")
            })
        });
    }
    group.finish();
}

fn first_run_vs_steady_state(criterion: &mut Criterion, dir: &Path) {
    let runtime = runtime();
    let steady_path = dir.join("steady.key");
    new_key(&steady_path);
    let fresh = AtomicUsize::new(0);
    // A missing key in a directory of its own, as on a first run.
    let missing_key = || {
        let run_dir = dir.join(format!("first-{}", fresh.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir(&run_dir).expect("mkdir");
        run_dir.join("endpoint.key")
    };
    let mut group = criterion.benchmark_group("first-run");
    group.bench_function("steady-state", |b| {
        b.iter(|| runtime.block_on(open_and_close(&steady_path, false)))
    });
    group.bench_function("first-run", |b| {
        b.iter_batched(
            missing_key,
            |path| runtime.block_on(open_and_close(&path, false)),
            BatchSize::PerIteration,
        )
    });
    // What a creation syncs: the new file, then its directory.
    group.bench_function("fsyncs", |b| {
        b.iter_batched(
            || {
                let path = missing_key();
                let pem = encode_key(&SecretKey::generate(), KeyFormat::Pkcs8Pem);
                let mut file = fs::File::create(&path).expect("create");
                file.write_all(&pem).expect("write");
                (file, path)
            },
            |(file, path)| {
                file.sync_all().expect("fsync file");
                let parent = path.parent().expect("parent");
                fs::File::open(parent)
                    .expect("open dir")
                    .sync_all()
                    .expect("fsync dir");
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn concurrent_first_runs(criterion: &mut Criterion, dir: &Path) {
    let exe = std::env::current_exe().expect("this bench binary");
    let fresh = AtomicUsize::new(0);
    // The baseline: as many processes loading a key that exists, so that nothing races.
    let existing = dir.join("existing.key");
    new_key(&existing);
    let mut group = criterion.benchmark_group("concurrent-first-runs");
    group.sample_size(10);
    for racers in RACERS {
        group.bench_function(format!("missing-{racers}"), |b| {
            b.iter_batched(
                || {
                    let run = fresh.fetch_add(1, Ordering::Relaxed);
                    dir.join(format!("race-{racers}-{run}"))
                        .join("endpoint.key")
                },
                |path| race(&exe, &path, racers),
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("existing-{racers}"), |b| {
            b.iter(|| race(&exe, &existing, racers))
        });
    }
    group.finish();
}

/// Starts `racers` processes on one key and waits until every one holds it.
fn race(exe: &Path, path: &Path, racers: usize) {
    let children: Vec<_> = (0..racers)
        .map(|_| {
            Command::new(exe)
                .env(CHILD_KEY_PATH, path)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn racer")
        })
        .collect();
    let mut ids: Vec<String> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().expect("racer");
            assert!(output.status.success(), "a racer failed");
            String::from_utf8(output.stdout).expect("id")
        })
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 1, "racers ended with {} identities", ids.len());
}

/// The median of a benchmark, in nanoseconds, from criterion's estimates.
fn median(group: &str, bench: &str) -> Option<f64> {
    let path = results_dir()
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// Prints the ratios; `paired` and `stable` are [`paired_open`]'s medians, `process`
/// [`paired_process`]'s.
fn report(
    (open, bare, derived): (f64, f64, f64),
    (stable_open, stable_bare, stable_derived): (f64, f64, f64),
    [(persistent_wall, persistent_cpu), (docs_wall, docs_cpu)]: [(f64, f64); 2],
) {
    let show = |ns: f64| {
        if ns >= 1e6 {
            format!("{:.2} ms", ns / 1e6)
        } else {
            format!("{:.1} µs", ns / 1e3)
        }
    };
    println!("\nRatios of medians (this run):");
    println!(
        "  open with an existing key / bare bind, {OPEN_PAIRS} alternating pairs: {} / {} = {:.3} (goal ≤ 1.05)",
        show(open),
        show(bare),
        open / bare
    );
    println!(
        "    the same, the bare bind making its key from 32 bytes first: {} / {} = {:.3}",
        show(open),
        show(derived),
        open / derived
    );
    println!(
        "  open with stable addressing / bare bind on all interfaces, {OPEN_PAIRS} alternating pairs: {} / {} = {:.3}",
        show(stable_open),
        show(stable_bare),
        stable_open / stable_bare
    );
    println!(
        "    the same, the bare bind making its key from 32 bytes first: {} / {} = {:.3}",
        show(stable_open),
        show(stable_derived),
        stable_open / stable_derived
    );
    println!(
        "  a whole process, persistent on an existing key / iroh's docs program, {PROCESS_PAIRS} alternating pairs: wall {} / {} = {:.3} (goal ≤ 1.03); CPU {} / {} = {:.3}",
        show(persistent_wall),
        show(docs_wall),
        persistent_wall / docs_wall,
        show(persistent_cpu),
        show(docs_cpu),
        persistent_cpu / docs_cpu
    );
    if let Some(raw) = median("key-load", "raw-read") {
        for (name, _) in FORMATS {
            if let Some(load) = median("key-load", name) {
                println!(
                    "  key load {name} / raw read: {} / {} = {:.2} (goal ≤ 1.5)",
                    show(load),
                    show(raw),
                    load / raw
                );
            }
        }
    }
    if let (Some(steady), Some(first), Some(fsyncs)) = (
        median("first-run", "steady-state"),
        median("first-run", "first-run"),
        median("first-run", "fsyncs"),
    ) {
        println!(
            "  first run / steady state: {} / {} = {:.2}; the two fsyncs take {}, {:.0} % of the difference",
            show(first),
            show(steady),
            first / steady,
            show(fsyncs),
            100.0 * fsyncs / (first - steady)
        );
    }
    if let (Some(lease), Some(host)) = (median("lease", "etcd"), median("lease", "host-lock")) {
        println!(
            "  take and let go of the identity with an etcd lease / with the host's lock alone: {} / {} ({:.1} ×)",
            show(lease),
            show(host),
            lease / host
        );
    }
    for racers in RACERS {
        let group = "concurrent-first-runs";
        if let (Some(missing), Some(existing)) = (
            median(group, &format!("missing-{racers}")),
            median(group, &format!("existing-{racers}")),
        ) {
            println!(
                "  {racers:>2} processes on a missing key: {} until all hold it; on an existing key: {} ({:.2} ×)",
                show(missing),
                show(existing),
                missing / existing
            );
        }
    }
}

/// 6: the lease's cost beside the locks'.
#[cfg(feature = "etcd")]
mod lease {
    use std::{
        net::TcpListener,
        path::Path,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use criterion::Criterion;
    use iroh_identity::{EtcdLease, Identity};

    /// An etcd member for the benchmark, killed when dropped.
    struct Etcd(std::process::Child, String);

    impl Drop for Etcd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn port() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("a port");
        listener.local_addr().expect("its address").port()
    }

    fn start(dir: &Path) -> Option<Etcd> {
        let (client, peer) = (port(), port());
        let client = format!("http://127.0.0.1:{client}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("etcd"))
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
            .args(["--initial-cluster", &format!("bench={peer}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Etcd(child, client))
    }

    pub(super) fn lease_vs_host_lock(criterion: &mut Criterion, dir: &Path) {
        let Some(etcd) = start(dir) else {
            eprintln!("no etcd on the path: the lease is not measured");
            return;
        };
        let runtime = super::runtime();
        let path = dir.join("lease.key");
        super::new_key(&path);
        let lease = EtcdLease::new([etcd.1.clone()]);
        // Until etcd answers: the first take waits for it.
        let start = Instant::now();
        while runtime
            .block_on(
                Identity::builder(&path)
                    .lease(lease.clone())
                    .lock_wait(Duration::from_millis(200))
                    .open(),
            )
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "etcd did not start"
            );
        }
        let mut group = criterion.benchmark_group("lease");
        group.bench_function("host-lock", |b| {
            b.iter(|| {
                runtime
                    .block_on(Identity::builder(&path).open())
                    .expect("take the identity")
            });
        });
        group.bench_function("etcd", |b| {
            b.iter(|| {
                // Let go of the last one (its lease is revoked in the background) and take
                // it again: the wait for the revoke is part of the cost.
                runtime
                    .block_on(Identity::builder(&path).lease(lease.clone()).open())
                    .expect("take the identity with its lease")
            });
        });
        group.finish();
    }
}
