//! Windows only: guarantees 4, 5, 7 and 9 as Windows gives them, against the real API. The
//! security descriptors the crate writes are read back, and DACLs are set, as another
//! program would, through `GetNamedSecurityInfoW` and `SetNamedSecurityInfoW`; the
//! processes are real, and killed with `TerminateProcess`.
//!
//! Under Wine, a file's DACL is kept as unix mode bits: its owner, SYSTEM and Everyone
//! survive, any other ACE (`BUILTIN\Users`, a group) reads back absent. What the rules say
//! of those is tested on descriptors Windows makes in memory (`src/trust.rs`), and here on
//! a file where Windows keeps them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use iroh_identity::{Error, PathKind, TrustProblem, load_key};
use windows_sys::Win32::{
    Foundation::{GENERIC_ALL, HANDLE, LocalFree},
    Security::{
        ACCESS_ALLOWED_ACE, ACE_HEADER, ACL,
        Authorization::{
            ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
            GetNamedSecurityInfoW, SDDL_REVISION_1, SE_FILE_OBJECT, SetNamedSecurityInfoW,
        },
        DACL_SECURITY_INFORMATION, GetAce, GetSecurityDescriptorDacl, GetTokenInformation,
        OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSID, TOKEN_QUERY,
        TOKEN_USER, TokenUser,
    },
    Storage::FileSystem::{
        BY_HANDLE_FILE_INFORMATION, FILE_ALL_ACCESS, FILE_FLAG_BACKUP_SEMANTICS,
        FILE_FLAG_OPEN_REPARSE_POINT, FILE_READ_DATA, GetFileInformationByHandle,
    },
    System::Threading::{GetCurrentProcess, OpenProcessToken},
};

use crate::support::{
    Snapshot,
    child::{Action, Holder, Task, outcome, run_to_end},
    example, identity_of, list, new_key_file,
    process::Process,
    temp_dir,
};

/// The file index of what is at `path` (not following a link): the inode of Windows.
#[allow(unsafe_code)]
pub(crate) fn file_index(path: &Path) -> u64 {
    use std::os::windows::{fs::OpenOptionsExt, io::AsRawHandle};

    let file = fs::OpenOptions::new()
        .access_mode(0)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
        .expect("open to read its index");
    let mut info = BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: an open handle and a structure to write to.
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle() as HANDLE, &mut info) };
    assert_ne!(ok, 0, "GetFileInformationByHandle");
    u64::from(info.nFileIndexHigh) << 32 | u64::from(info.nFileIndexLow)
}

/// An ACE as SDDL would write its principal, and its rights.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ace {
    allow: bool,
    sid: String,
    rights: u32,
}

/// The owner and the DACL's ACEs of what is at `path`, as another program reads them.
#[allow(unsafe_code)]
fn security_of(path: &Path) -> (String, Vec<Ace>) {
    let wide = wide(path.as_os_str().to_str().expect("a UTF-8 path"));
    let (mut owner, mut dacl, mut descriptor): (PSID, *mut ACL, _) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    // SAFETY: a NUL-terminated path and pointers to write to; the descriptor is freed
    // below, after everything pointing into it was read.
    let error = unsafe {
        GetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            &mut owner,
            std::ptr::null_mut(),
            &mut dacl,
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    assert_eq!(error, 0, "GetNamedSecurityInfoW {}", path.display());
    assert!(!dacl.is_null(), "{} has no DACL", path.display());
    let mut aces = Vec::new();
    // SAFETY: a valid DACL of the descriptor; allowed and denied ACEs have the layout of
    // ACCESS_ALLOWED_ACE, their SID at `SidStart`.
    unsafe {
        for index in 0..u32::from((*dacl).AceCount) {
            let mut ace = std::ptr::null_mut();
            assert_ne!(GetAce(dacl, index, &mut ace), 0, "GetAce");
            let header = *ace.cast::<ACE_HEADER>();
            let body = ace.cast::<ACCESS_ALLOWED_ACE>();
            aces.push(Ace {
                allow: header.AceType == 0,
                sid: sid_string(std::ptr::addr_of_mut!((*body).SidStart).cast()),
                rights: (*body).Mask,
            });
        }
        let owner = sid_string(owner);
        LocalFree(descriptor);
        (owner, aces)
    }
}

/// The security descriptor that `sddl` writes, for the caller to free with `LocalFree`.
#[allow(unsafe_code)]
fn descriptor(sddl: &str) -> windows_sys::Win32::Security::PSECURITY_DESCRIPTOR {
    let text = wide(sddl);
    let mut descriptor = std::ptr::null_mut();
    // SAFETY: a NUL-terminated string and a pointer to write the descriptor to.
    let ok = unsafe {
        ConvertStringSecurityDescriptorToSecurityDescriptorW(
            text.as_ptr(),
            SDDL_REVISION_1,
            &mut descriptor,
            std::ptr::null_mut(),
        )
    };
    assert_ne!(ok, 0, "{sddl}");
    descriptor
}

/// Gives what is at `path` the DACL `dacl` (SDDL: `(A;;FR;;;WD)...`), inheriting
/// nothing: as an administrator or another program would.
#[allow(unsafe_code)]
fn set_dacl(path: &Path, dacl: &str) {
    let descriptor = descriptor(&format!("D:P{dacl}"));
    let (mut present, mut acl, mut defaulted) = (0, std::ptr::null_mut(), 0);
    let wide = wide(path.as_os_str().to_str().expect("a UTF-8 path"));
    // SAFETY: the descriptor just made, and pointers to write to; the DACL points into
    // it and is used before it is freed.
    let error = unsafe {
        assert_ne!(
            GetSecurityDescriptorDacl(descriptor, &mut present, &mut acl, &mut defaulted),
            0
        );
        let error = SetNamedSecurityInfoW(
            wide.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            acl,
            std::ptr::null_mut(),
        );
        LocalFree(descriptor);
        error
    };
    assert_eq!(error, 0, "SetNamedSecurityInfoW {}: {dacl}", path.display());
}

/// Writes `content` to a new file at `path` (what was there is removed first) that only
/// the user, SYSTEM and Administrators may use, as `chmod 600` makes one on unix. The
/// file is created with that DACL, as a careful program does: Wine keeps a DACL as unix
/// mode bits, and one set on an existing file (`SetNamedSecurityInfoW`) leaves others
/// their read bits there, while one given at creation does not.
#[allow(unsafe_code)]
pub(crate) fn write_private(path: &Path, content: &[u8]) {
    use std::{io::Write, os::windows::io::FromRawHandle};
    use windows_sys::Win32::{
        Foundation::INVALID_HANDLE_VALUE,
        Security::SECURITY_ATTRIBUTES,
        Storage::FileSystem::{CREATE_NEW, CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_GENERIC_WRITE},
    };

    match fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            panic!("remove {}: {err}", path.display())
        }
        _ => {}
    }
    let descriptor = descriptor(&format!("D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;{})", me()));
    let attributes = SECURITY_ATTRIBUTES {
        nLength: size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor,
        bInheritHandle: 0,
    };
    let name = wide(path.as_os_str().to_str().expect("a UTF-8 path"));
    // SAFETY: a NUL-terminated path and attributes that outlive the call; the handle
    // returned is owned by the `File` made from it.
    let handle = unsafe {
        CreateFileW(
            name.as_ptr(),
            FILE_GENERIC_WRITE,
            0,
            &attributes,
            CREATE_NEW,
            FILE_ATTRIBUTE_NORMAL,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: the descriptor made above, no longer used.
    unsafe { LocalFree(descriptor) };
    assert_ne!(
        handle,
        INVALID_HANDLE_VALUE,
        "create {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    // SAFETY: a handle just opened, owned by nothing else.
    let mut file = unsafe { fs::File::from_raw_handle(handle) };
    file.write_all(content).expect("write the file");
}

/// The user the tests run as.
#[allow(unsafe_code)]
fn me() -> String {
    let mut token = std::ptr::null_mut();
    let mut buffer = vec![0u64; 64];
    let mut len = 0;
    // SAFETY: this process's pseudo-handle, a buffer of the size given, and the token
    // closed at once (a leak of one handle in a test is of no matter otherwise).
    unsafe {
        assert_ne!(
            OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token),
            0
        );
        assert_ne!(
            GetTokenInformation(
                token,
                TokenUser,
                buffer.as_mut_ptr().cast(),
                (buffer.len() * 8) as u32,
                &mut len,
            ),
            0
        );
        windows_sys::Win32::Foundation::CloseHandle(token);
        sid_string((*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid)
    }
}

/// `S-1-5-...` of the SID at `sid`.
#[allow(unsafe_code)]
unsafe fn sid_string(sid: PSID) -> String {
    let mut text = std::ptr::null_mut();
    // SAFETY: a valid SID, as the caller promised, and a string freed below.
    unsafe {
        assert_ne!(ConvertSidToStringSidW(sid, &mut text), 0);
        let len = (0..).take_while(|&at| *text.add(at) != 0).count();
        let string = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        string
    }
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(Some(0)).collect()
}

const SYSTEM: &str = "S-1-5-18";
const ADMINISTRATORS: &str = "S-1-5-32-544";
const EVERYONE: &str = "S-1-1-0";
const USERS: &str = "S-1-5-32-545";

/// Checks that only the user, SYSTEM and Administrators have an ACE on `path`, the user
/// with full access, and that the user owns it.
fn assert_owner_only(path: &Path) {
    let (owner, aces) = security_of(path);
    let me = me();
    eprintln!("{}: owner {owner}, {aces:?}", path.display());
    assert_eq!(owner, me, "{}", path.display());
    for ace in &aces {
        assert!(
            [me.as_str(), SYSTEM, ADMINISTRATORS].contains(&ace.sid.as_str()),
            "{} grants {ace:?}",
            path.display()
        );
    }
    assert!(
        aces.iter().any(|ace| ace.allow
            && ace.sid == me
            && (ace.rights & FILE_ALL_ACCESS == FILE_ALL_ACCESS || ace.rights & GENERIC_ALL != 0)),
        "{}: the user has no full access: {aces:?}",
        path.display()
    );
}

#[test]
fn what_the_crate_creates_reads_back_owner_only() -> anyhow::Result<()> {
    let dir = temp_dir();
    let path = dir.path().join("new").join("nested").join("endpoint.key");
    let id = identity_of(&path)?;
    for made in [
        dir.path().join("new"),
        dir.path().join("new").join("nested"),
        path.clone(),
    ] {
        assert_owner_only(&made);
    }
    assert_eq!(identity_of(&path)?, id);
    Ok(())
}

/// Opens the key at `path` and checks it is refused because `sid` may read it, with the
/// `icacls` commands that fix it, and that the file is left as it was.
fn assert_refused_as_readable_by(path: &Path, sid: &str) {
    let before = Snapshot::of(path);
    let err = load_key(path).expect_err("a key others may read is refused");
    let message = err.to_string();
    eprintln!("{message}");
    match &err {
        Error::UntrustedPath {
            kind: PathKind::KeyFile,
            owner: None,
            problem: TrustProblem::ReadableBy { principal },
            ..
        } => assert_eq!(principal.sid(), sid),
        other => panic!("{other:?}"),
    }
    let shown = path.display();
    for fix in [
        format!("`icacls \"{shown}\" /inheritance:d`"),
        format!("`icacls \"{shown}\" /remove:g *{sid}`"),
    ] {
        assert!(message.contains(&fix), "{fix} missing in: {message}");
    }
    // An endpoint refuses it too, and nothing is changed.
    let outcome = run_to_end(Task::new(Action::Open, path).command());
    assert!(
        outcome.expect_error().contains("may be read by"),
        "{outcome}"
    );
    assert_eq!(Snapshot::of(path), before);
}

#[test]
fn a_key_everyone_may_read_is_refused_with_the_icacls_fix() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    new_key_file(&path);
    set_dacl(&path, &format!("(A;;FA;;;{})(A;;FR;;;WD)", me()));
    let (_, aces) = security_of(&path);
    assert!(
        aces.iter()
            .any(|ace| ace.allow && ace.sid == EVERYONE && ace.rights & FILE_READ_DATA != 0),
        "Everyone may read it now: {aces:?}"
    );
    assert_refused_as_readable_by(&path, EVERYONE);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "Wine 8 keeps a file's DACL as unix mode bits: an ACE for BUILTIN\\Users reads \
              back absent (the rule is tested on a descriptor in memory, src/trust.rs)"
)]
fn a_key_users_may_read_is_refused_with_the_icacls_fix() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    new_key_file(&path);
    set_dacl(&path, &format!("(A;;FA;;;{})(A;;FR;;;BU)", me()));
    let (_, aces) = security_of(&path);
    assert!(
        aces.iter().any(|ace| ace.allow && ace.sid == USERS),
        "Users may read it now: {aces:?}"
    );
    assert_refused_as_readable_by(&path, USERS);
}

#[test]
fn a_folder_everyone_may_change_is_no_place_for_a_key() -> anyhow::Result<()> {
    let dir = temp_dir();
    let open = dir.path().join("open");
    fs::create_dir(&open)?;
    set_dacl(&open, &format!("(A;OICI;FA;;;{})(A;OICI;FA;;;WD)", me()));
    // The key's own folder, and a folder above it: Everyone may remove what is in it,
    // so it is refused as any folder on the way would be. (A folder where others may
    // only add names, refused as the key's own folder alone, Wine cannot keep: its
    // DACL becomes unix mode bits, and a unix `o+w` gives Everyone every right.)
    for (path, refused, kind) in [
        (open.join("endpoint.key"), open.clone(), PathKind::Directory),
        (
            open.join("below").join("endpoint.key"),
            open.clone(),
            PathKind::Directory,
        ),
    ] {
        let err = identity_of(&path).expect_err("refused");
        let message = err.to_string();
        match &err {
            Error::UntrustedPath {
                path: judged,
                kind: found,
                problem: TrustProblem::WritableBy { principal },
                ..
            } => {
                assert_eq!((judged, *found), (&refused, kind), "{message}");
                assert_eq!(principal.sid(), EVERYONE);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            message.contains(&format!(
                "`icacls \"{}\" /remove:g *{EVERYONE}`",
                refused.display()
            )),
            "{message}"
        );
        assert!(!path.exists(), "a key was made in {}", refused.display());
    }
    assert!(list(&open).is_empty(), "{:?}", list(&open));
    Ok(())
}

#[cfg(feature = "cli")]
#[test]
fn the_key_tool_tells_a_key_others_may_read_with_its_fix() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    new_key_file(&path);
    set_dacl(&path, &format!("(A;;FA;;;{})(A;;FR;;;WD)", me()));
    let output = Command::new(env!("CARGO_BIN_EXE_iroh-identity"))
        .args(["inspect".as_ref(), path.as_os_str()])
        .output()
        .expect("run iroh-identity");
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("permissions: EXPOSED: key file"),
        "{report}"
    );
    assert!(
        report.contains(&format!("/remove:g *{EVERYONE}")),
        "{report}"
    );
}

#[test]
fn processes_racing_on_a_first_start_end_with_one_identity() {
    const RACERS: usize = 8;
    let rounds = crate::campaigns::size(5, 50);
    for round in 0..rounds {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.key");
        let task = Task::new(Action::Identity, &path).start_in(Duration::from_millis(1500));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| Process::start(&mut task.command()))
            .collect();
        let ids: Vec<String> = racers
            .into_iter()
            .map(|racer| outcome(racer).expect_id().to_owned())
            .collect();
        let key = load_key(&path).expect("the one key").public().to_string();
        assert!(
            ids.iter().all(|id| *id == key),
            "round {round}: {ids:?}, the file holds {key}"
        );
        assert_eq!(list(dir.path()), ["endpoint.key"], "round {round}");
    }
    crate::campaigns::figure(
        "windows race",
        format_args!("{rounds} rounds of {RACERS} processes on a first start: one identity each"),
    );
}

#[test]
fn a_second_process_on_a_held_identity_is_told_it_is_in_use_until_the_holder_is_killed() {
    let dir = temp_dir();
    let path = dir.path().join("endpoint.key");
    let holder = Holder::start(Task::new(Action::Hold, &path).command());
    let start = Instant::now();
    let refused = run_to_end(Task::new(Action::Open, &path).lock_wait_ms(300).command());
    assert!(start.elapsed() >= Duration::from_millis(300));
    let error = refused.expect_error();
    assert!(
        error.contains(&format!(
            "identity {} is in use by another endpoint on this host",
            holder.id
        )),
        "{error}"
    );
    let id = holder.id.clone();
    // TerminateProcess: no close, no clean-up. The next open takes it without waiting.
    holder.kill();
    let admitted = run_to_end(Task::new(Action::Open, &path).lock_wait_ms(0).command());
    assert_eq!(admitted.expect_id(), id);
}

/// Where the user's lock file is: the local application data, as the crate finds it.
fn locks_file() -> PathBuf {
    let local = std::env::var_os("LOCALAPPDATA").expect("LOCALAPPDATA is set");
    PathBuf::from(local).join("iroh-identity").join("locks")
}

#[test]
fn the_host_lock_is_one_file_that_cannot_be_removed_while_held() {
    // R4: identities from the environment, each its own lock, leave nothing behind them.
    let mut task = Task::new(Action::OpenKeys { runs: 50 }, "C:\\nonexistent\\unused.key");
    task.key_env = Some("IROH_IDENTITY_TEST_KEY".to_owned());
    let opened = task.run();
    assert_eq!(
        opened.expect(|report| match report {
            crate::support::child::Report::Opened { ids, refused } => Some((ids.len(), *refused)),
            _ => None,
        }),
        (50, 0)
    );
    let locks = locks_file();
    assert_eq!(
        list(locks.parent().expect("its folder")),
        ["locks"],
        "one file of locks for every identity"
    );
    assert_eq!(fs::metadata(&locks).expect("the locks file").len(), 0);

    // R3: while an identity is held, the file cannot be removed or renamed, as a
    // cleaner would; once it is let go of, it can.
    let dir = temp_dir();
    let holder = Holder::start(Task::new(Action::Hold, dir.path().join("endpoint.key")).command());
    let removed = fs::remove_file(&locks);
    assert!(removed.is_err(), "the held lock's file was removed");
    let renamed = fs::rename(&locks, locks.with_file_name("moved"));
    assert!(renamed.is_err(), "the held lock's file was renamed");
    eprintln!("while held: remove {removed:?}, rename {renamed:?}");
    holder.kill();
}

#[test]
fn persistent_without_a_path_uses_the_local_application_data() {
    let local = std::env::var_os("LOCALAPPDATA").expect("LOCALAPPDATA is set");
    // KeyLocation::default_for("com", "example", "iroh-identity-example").
    let project = Path::new(&local)
        .join("example")
        .join("iroh-identity-example");
    let expected = project.join("data").join("endpoint.key");
    let existed = expected.exists();
    let run = || {
        let output = Command::new(example("persistent"))
            .output()
            .expect("run the persistent example");
        assert!(output.status.success(), "{output:?}");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{stdout}");
        assert_eq!(lines[1], format!("key file: {}", expected.display()));
        lines[0].to_owned()
    };
    let first = run();
    assert_eq!(first, run());
    assert_owner_only(&expected);
    if !existed {
        let _ = fs::remove_dir_all(&project);
    }
}
