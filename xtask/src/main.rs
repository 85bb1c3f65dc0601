//! The project's own tasks, run as `cargo xtask TASK` (the alias is in `.cargo/config.toml`).
//!
//! - `cargo xtask test [ARGS]`: the README's test command. It installs what the suite needs
//!   when it is missing, then runs every test with every feature (`cargo test --locked
//!   --all-features ARGS`). The suite runs real tools: etcd, a Secret Service (GNOME Keyring
//!   on a private D-Bus bus), `openssl` and `ssh-keygen`, and acts as other users and in
//!   namespaces of its own, which needs root: as a user, the test binary runs under `sudo`.
//! - `cargo xtask ci`: the rest of what CI checks: formatting, lints, docs, and every build
//!   a user can ask for (each feature alone, the declared `rust-version`, the benchmarks,
//!   the fuzz target, Windows).
//! - `cargo xtask test-windows [ARGS]`: every test with every feature built for Windows
//!   (`x86_64-pc-windows-gnu`, in release: a debug test binary passes the limit of exports
//!   mingw's linker takes) and run under Wine, in a Wine prefix of the run's own under
//!   `target/wine`. Wine 8 lacks the `ProcessPrng` that Rust's std asks for; a stub DLL
//!   built here from `xtask/wine/` gives it, in that prefix only.
//!
//! Packages are installed here and nowhere else: with `apt-get` on Debian and Ubuntu, as
//! root or through `sudo`. Where that cannot be done, the task stops at once and names the
//! packages to install. No test is skipped: a test that cannot run fails.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

/// Something the tests or a build need, and the packages that give it.
struct Need {
    /// A program on the `PATH`, or an absolute path to a file.
    what: &'static str,
    /// Why it is needed.
    why: &'static str,
    debian: &'static str,
    fedora: &'static str,
    arch: &'static str,
}

/// What `cargo xtask test` needs.
const SUITE: &[Need] = &[
    Need {
        what: "openssl",
        why: "the interop tests read keys with the real tool; the lease tests make etcd's TLS \
              certificates with it",
        debian: "openssl",
        fedora: "openssl",
        arch: "openssl",
    },
    Need {
        what: "ssh-keygen",
        why: "the interop tests read keys with the real tool",
        debian: "openssh-client",
        fedora: "openssh-clients",
        arch: "openssh",
    },
    Need {
        what: "dbus-daemon",
        why: "the keychain tests start a private session bus",
        debian: "dbus",
        fedora: "dbus-daemon",
        arch: "dbus",
    },
    Need {
        what: "gnome-keyring-daemon",
        why: "the keychain tests run a real Secret Service",
        debian: "gnome-keyring",
        fedora: "gnome-keyring",
        arch: "gnome-keyring",
    },
    Need {
        what: "secret-tool",
        why: "the keychain tests look at entries as another client would",
        debian: "libsecret-tools",
        fedora: "libsecret",
        arch: "libsecret",
    },
    Need {
        what: "gdbus",
        why: "the keychain tests unlock the test keyring",
        debian: "libglib2.0-bin",
        fedora: "glib2",
        arch: "glib2",
    },
    Need {
        what: "etcd",
        why: "the lease tests start their own etcd",
        debian: "etcd-server",
        fedora: "etcd",
        arch: "etcd",
    },
    Need {
        what: "etcdctl",
        why: "the lease tests act on etcd as an operator would",
        debian: "etcd-client",
        fedora: "etcd",
        arch: "etcd",
    },
    Need {
        what: "protoc",
        why: "the etcd client's build compiles etcd's protocol",
        debian: "protobuf-compiler",
        fedora: "protobuf-compiler",
        arch: "protobuf",
    },
    Need {
        what: "/usr/include/google/protobuf/descriptor.proto",
        why: "etcd's protocol imports protobuf's well-known types",
        debian: "libprotobuf-dev",
        fedora: "protobuf-devel",
        arch: "protobuf",
    },
    Need {
        what: "ip",
        why: "the tests of several machines give each its own network namespace",
        debian: "iproute2",
        fedora: "iproute",
        arch: "iproute2",
    },
];

/// What the Windows build needs besides the suite's packages.
const WINDOWS: &[Need] = &[Need {
    what: "x86_64-w64-mingw32-gcc",
    why: "ring's build compiles C for Windows, and the Wine tests' stub DLL is built with it",
    debian: "gcc-mingw-w64-x86-64",
    fedora: "mingw64-gcc",
    arch: "mingw-w64-gcc",
}];

/// What running the Windows tests needs besides the Windows build.
const WINE: &[Need] = &[Need {
    what: WINE_RUNNER,
    why: "the Windows tests run under Wine",
    debian: "wine64",
    fedora: "wine",
    arch: "wine",
}];

/// Wine's loader of 64-bit programs: without its recommended packages, Debian's `wine64`
/// puts no `wine` on the `PATH`.
const WINE_RUNNER: &str = "/usr/lib/wine/wine64";

/// The Windows target that CI builds.
const WINDOWS_TARGET: &str = "x86_64-pc-windows-gnu";

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let task = args.next().and_then(|task| task.into_string().ok());
    let rest: Vec<OsString> = args.collect();
    let result = match task.as_deref() {
        Some("test") => test(&rest),
        Some("ci") if rest.is_empty() => ci(),
        Some("test-windows") => test_windows(&rest),
        _ => Err(
            "usage: cargo xtask test [CARGO TEST ARGS...] | cargo xtask ci | \
                  cargo xtask test-windows [CARGO TEST ARGS...]"
                .to_owned(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Installs what the suite needs, then runs every test with every feature.
fn test(args: &[OsString]) -> Result<(), String> {
    install(SUITE)?;
    cargo_test(&["--all-features"], args)
}

/// Everything else that CI checks.
fn ci() -> Result<(), String> {
    install(SUITE)?;
    install(WINDOWS)?;
    run(rustup(&["component", "add", "rustfmt", "clippy"]))?;
    for manifest in ["Cargo.toml", "xtask/Cargo.toml"] {
        run(cargo(&[
            "fmt",
            "--manifest-path",
            manifest,
            "--",
            "--check",
        ]))?;
        run(cargo(&[
            "clippy",
            "--locked",
            "--manifest-path",
            manifest,
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // The default build's tests: what `cargo test` runs for a user who asks for no feature.
    cargo_test(&[], &[])?;
    // The default build and each feature alone, every target, without a warning.
    for features in ["", "cli", "keyring", "etcd"] {
        run(cargo(&[
            "clippy",
            "--locked",
            "--all-targets",
            "--features",
            features,
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // The oldest Rust the crate says it builds with.
    let msrv = rust_version()?;
    run(rustup(&[
        "toolchain",
        "install",
        &msrv,
        "--profile",
        "minimal",
    ]))?;
    run(rustup(&[
        "run",
        &msrv,
        "cargo",
        "check",
        "--locked",
        "--all-features",
    ]))?;
    // The benchmarks and the fuzz target keep building (running them is RELIABILITY.md's).
    run(cargo(&["bench", "--locked", "--all-features", "--no-run"]))?;
    run(cargo(&[
        "check",
        "--locked",
        "--manifest-path",
        "fuzz/Cargo.toml",
    ]))?;
    let mut doc = cargo(&["doc", "--locked", "--no-deps", "--all-features"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    run(doc)?;
    // Windows, without a warning: the library, the key tool, the tests and the examples
    // (`test-windows` runs the tests). macOS cannot be built here: ring's build needs
    // Apple's C toolchain.
    run(rustup(&["target", "add", WINDOWS_TARGET]))?;
    run(cargo(&[
        "clippy",
        "--locked",
        "--all-features",
        "--lib",
        "--bins",
        "--tests",
        "--examples",
        "--target",
        WINDOWS_TARGET,
        "--",
        "-D",
        "warnings",
    ]))
}

/// Builds every test with every feature for Windows and runs them under Wine, in a new
/// Wine prefix under `target/wine`: nothing of an earlier run (a credential, a lock) is
/// met, and nothing of the user's Wine is touched.
fn test_windows(args: &[OsString]) -> Result<(), String> {
    install(WINDOWS)?;
    install(WINE)?;
    run(rustup(&["target", "add", WINDOWS_TARGET]))?;
    let wine = repository().join("target").join("wine");
    let prefix = wine.join("prefix");
    if prefix.exists() {
        std::fs::remove_dir_all(&prefix).map_err(|err| {
            format!(
                "cannot remove the old Wine prefix {}: {err}",
                prefix.display()
            )
        })?;
    }
    std::fs::create_dir_all(&wine)
        .map_err(|err| format!("cannot make {}: {err}", wine.display()))?;
    let in_prefix = |mut command: Command| {
        command.env("WINEPREFIX", &prefix).env("WINEDEBUG", "-all");
        command
    };
    let mut boot = Command::new(WINE_RUNNER);
    boot.args(["wineboot", "-i"]);
    run(in_prefix(boot))?;
    // Rust's std asks bcryptprimitives.dll for ProcessPrng, which Wine 8 lacks
    // (rust-lang/rust#128066).
    let dll = wine.join("bcryptprimitives.dll");
    let mut stub = Command::new("x86_64-w64-mingw32-gcc");
    stub.args(["-O2", "-shared", "-o"]).arg(&dll).args([
        "xtask/wine/bcryptprimitives.c",
        "xtask/wine/bcryptprimitives.def",
        "-ladvapi32",
    ]);
    run(stub)?;
    let system32 = prefix.join("drive_c/windows/system32/bcryptprimitives.dll");
    std::fs::copy(&dll, &system32)
        .map_err(|err| format!("cannot copy the stub to {}: {err}", system32.display()))?;
    let mut command = cargo(&[
        "test",
        "--release",
        "--locked",
        "--all-features",
        "--target",
        WINDOWS_TARGET,
    ]);
    command.args(args).env("IROH_IDENTITY_NO_SKIP", "1").env(
        format!(
            "CARGO_TARGET_{}_RUNNER",
            WINDOWS_TARGET.to_uppercase().replace('-', "_")
        ),
        WINE_RUNNER,
    );
    run(in_prefix(command))
}

/// `cargo test --locked FEATURES ARGS`, as root: the tests that act as other users or in
/// namespaces need it. As a user, the test binaries run under `sudo`; cargo builds them as
/// the user. `IROH_IDENTITY_NO_SKIP` makes a test that would otherwise skip for want of root
/// fail instead.
fn cargo_test(features: &[&str], args: &[OsString]) -> Result<(), String> {
    let mut command = cargo(&["test", "--locked"]);
    command.args(features).args(args);
    command.env("IROH_IDENTITY_NO_SKIP", "1");
    if !is_root() {
        if !has("sudo") {
            return Err(
                "the tests act as other users and in namespaces of their own, which needs \
                 root: run this as root, or install sudo"
                    .to_owned(),
            );
        }
        let host = host_triple()?;
        let runner = format!(
            "CARGO_TARGET_{}_RUNNER",
            host.to_uppercase().replace('-', "_")
        );
        command.env(runner, "sudo --preserve-env");
    }
    run(command)
}

/// Installs the packages that give what is missing of `needs`, or says which to install.
fn install(needs: &[Need]) -> Result<(), String> {
    let missing: Vec<&Need> = needs.iter().filter(|need| !present(need.what)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages = |pick: fn(&Need) -> &'static str| {
        let mut names: Vec<&str> = missing.iter().map(|need| pick(need)).collect();
        names.dedup();
        names.join(" ")
    };
    for need in &missing {
        eprintln!("xtask: missing {}: {}", need.what, need.why);
    }
    let debian = packages(|need| need.debian);
    let elevate: &[&str] = if is_root() {
        &[]
    } else if has("sudo") {
        &["sudo"]
    } else {
        return Err(cannot_install("there is no sudo", &missing, &debian));
    };
    if !is_debian_like() {
        return Err(cannot_install(
            "this is not Debian or Ubuntu",
            &missing,
            &debian,
        ));
    }
    let apt = |args: &[&str]| {
        let mut command = Command::new(elevate.first().copied().unwrap_or("apt-get"));
        if !elevate.is_empty() {
            command.arg("apt-get");
        }
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run(apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(debian.split(' '));
    run(install)?;
    match needs.iter().find(|need| !present(need.what)) {
        Some(need) => Err(format!(
            "{} is still missing after installing {debian}",
            need.what
        )),
        None => Ok(()),
    }
}

/// The error when packages cannot be installed here: what to install, per system.
fn cannot_install(why: &str, missing: &[&Need], debian: &str) -> String {
    let list = |pick: fn(&Need) -> &'static str| {
        let mut names: Vec<&str> = missing.iter().map(|need| pick(need)).collect();
        names.sort_unstable();
        names.dedup();
        names.join(" ")
    };
    format!(
        "cannot install what the tests need ({why}); install it, then run this again:\n  \
         Debian, Ubuntu: apt-get install --no-install-recommends {debian}\n  \
         Fedora (names not tried here): dnf install {}\n  \
         Arch (names not tried here): pacman -S {}",
        list(|need| need.fedora),
        list(|need| need.arch),
    )
}

/// Whether `what` (a program on the `PATH`, or an absolute file path) is there.
fn present(what: &str) -> bool {
    if what.starts_with('/') {
        Path::new(what).is_file()
    } else {
        has(what)
    }
}

/// Whether the program `name` is on the `PATH`.
fn has(name: &str) -> bool {
    env::var_os("PATH")
        .is_some_and(|path| env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        || Path::new("/usr/sbin").join(name).is_file()
        || Path::new("/sbin").join(name).is_file()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn is_debian_like() -> bool {
    std::fs::read_to_string("/etc/os-release").is_ok_and(|release| {
        release.lines().any(|line| {
            let Some((key, value)) = line.split_once('=') else {
                return false;
            };
            matches!(key, "ID" | "ID_LIKE")
                && value
                    .trim_matches('"')
                    .split(' ')
                    .any(|id| matches!(id, "debian" | "ubuntu"))
        })
    })
}

/// The `rust-version` that `Cargo.toml` declares.
fn rust_version() -> Result<String, String> {
    let manifest = std::fs::read_to_string("Cargo.toml").map_err(|err| err.to_string())?;
    manifest
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix("rust-version")?.trim_start();
            Some(value.strip_prefix('=')?.trim().trim_matches('"').to_owned())
        })
        .ok_or_else(|| "Cargo.toml declares no rust-version".to_owned())
}

fn host_triple() -> Result<String, String> {
    let output = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|err| format!("cannot run rustc: {err}"))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV names no host".to_owned())
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(args);
    command
}

fn rustup(args: &[&str]) -> Command {
    let mut command = Command::new("rustup");
    command.args(args);
    command
}

/// The repository's root, where every command runs.
fn repository() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_owned()
}

/// Runs `command` where the repository is, echoing it first; fails if it does.
fn run(mut command: Command) -> Result<(), String> {
    command.current_dir(repository());
    let shown = format!("{command:?}");
    eprintln!("xtask: {shown}");
    let status = command
        .status()
        .map_err(|err| format!("cannot run {shown}: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}
