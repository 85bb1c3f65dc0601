//! The Windows Credential Manager for the keychain tests: the store of the user the tests
//! run as (under Wine, the Wine prefix's), read and written here with the calls the
//! crate's store makes (`CredReadW`, `CredWriteW`), as another program on the desktop
//! would.
//!
//! There is no daemon to start, and no private store to give a test: every process of the
//! user reaches the same one. So a test holds it alone for as long as it lives (tests that
//! use it run one at a time), and the entries made meanwhile are deleted when it is
//! dropped.

use std::{
    ffi::OsStr,
    process::Command,
    sync::{Mutex, MutexGuard},
};

use windows_sys::Win32::{
    Foundation::ERROR_NOT_FOUND,
    Security::Credentials::{
        CRED_PERSIST_ENTERPRISE, CRED_TYPE_GENERIC, CREDENTIALW, CredDeleteW, CredEnumerateW,
        CredFree, CredReadW, CredWriteW,
    },
};

/// One test at a time has the store.
static TURN: Mutex<()> = Mutex::new(());

/// The user's Credential Manager, held by one test.
pub(crate) struct CredentialManager {
    /// The generic credentials there were when the test began.
    before: Vec<String>,
    _turn: MutexGuard<'static, ()>,
}

impl CredentialManager {
    /// Takes the store for this test.
    pub(crate) fn start() -> Self {
        let turn = TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Self {
            before: targets(),
            _turn: turn,
        }
    }

    /// Gives `command` this store: there is nothing to give, every process of the user
    /// reaches it.
    pub(crate) fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
    }

    /// A command that runs `program` with this store.
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        Command::new(program)
    }

    /// What the entry `service`/`account` holds, byte for byte; `None` when there is no
    /// such entry.
    #[allow(unsafe_code)]
    pub(crate) fn lookup(&self, service: &str, account: &str) -> Option<Vec<u8>> {
        let target = wide(&target(service, account));
        let mut credential: *mut CREDENTIALW = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name and a pointer to write the credential to, freed
        // below.
        let found = unsafe { CredReadW(target.as_ptr(), CRED_TYPE_GENERIC, 0, &mut credential) };
        if found == 0 {
            let err = std::io::Error::last_os_error();
            assert_eq!(
                err.raw_os_error(),
                Some(ERROR_NOT_FOUND as i32),
                "CredReadW: {err}"
            );
            return None;
        }
        // SAFETY: CredReadW gave a credential whose blob has the size it says; it is
        // copied before the credential is freed.
        unsafe {
            let blob = std::slice::from_raw_parts(
                (*credential).CredentialBlob,
                (*credential).CredentialBlobSize as usize,
            )
            .to_vec();
            CredFree(credential.cast());
            Some(blob)
        }
    }

    /// Stores `secret` in the entry `service`/`account`, as anything else on the desktop
    /// could.
    #[allow(unsafe_code)]
    pub(crate) fn store(&self, service: &str, account: &str, secret: &[u8]) {
        let mut target = wide(&target(service, account));
        let mut user = wide(account);
        let mut blob = secret.to_vec();
        // SAFETY: an all-zero CREDENTIALW is valid (null pointers, no attributes).
        let mut credential: CREDENTIALW = unsafe { std::mem::zeroed() };
        credential.Type = CRED_TYPE_GENERIC;
        credential.TargetName = target.as_mut_ptr();
        credential.UserName = user.as_mut_ptr();
        credential.CredentialBlob = blob.as_mut_ptr();
        credential.CredentialBlobSize = u32::try_from(blob.len()).expect("a small secret");
        credential.Persist = CRED_PERSIST_ENTERPRISE;
        // SAFETY: a credential whose pointers outlive the call.
        let stored = unsafe { CredWriteW(&credential, 0) };
        assert_ne!(stored, 0, "CredWriteW: {}", std::io::Error::last_os_error());
    }
}

impl Drop for CredentialManager {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        for made in targets().iter().filter(|name| !self.before.contains(name)) {
            let name = wide(made);
            // SAFETY: a NUL-terminated name.
            unsafe { CredDeleteW(name.as_ptr(), CRED_TYPE_GENERIC, 0) };
        }
    }
}

/// The credential the crate's store (keyring's) keeps the entry `service`/`account` in.
fn target(service: &str, account: &str) -> String {
    format!("{account}.{service}")
}

/// The names of the user's generic credentials.
#[allow(unsafe_code)]
fn targets() -> Vec<String> {
    let (mut count, mut list) = (0u32, std::ptr::null_mut());
    // SAFETY: pointers to write the count and the list to; the list is freed below.
    if unsafe { CredEnumerateW(std::ptr::null(), 0, &mut count, &mut list) } == 0 {
        return Vec::new();
    }
    let mut names = Vec::new();
    // SAFETY: CredEnumerateW gave `count` credentials, each with a NUL-terminated name.
    unsafe {
        for index in 0..count as usize {
            let credential = *list.add(index);
            if (*credential).Type != CRED_TYPE_GENERIC {
                continue;
            }
            let name = (*credential).TargetName;
            let len = (0..).take_while(|&at| *name.add(at) != 0).count();
            names.push(String::from_utf16_lossy(std::slice::from_raw_parts(
                name, len,
            )));
        }
        CredFree(list.cast());
    }
    names
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain(Some(0)).collect()
}
