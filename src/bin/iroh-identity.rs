//! `iroh-identity`: look at, create, convert and export iroh key files without writing
//! code. Built with the `cli` feature: `cargo install iroh-identity --features cli`; with
//! `--features cli,keyring` it moves keys in and out of the OS secret store too.

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use iroh::SecretKey;
use iroh_identity::{
    Error, KeyFormat, decode_key, encode_key, inspect_key, load_key, store_new_key,
};
use zeroize::Zeroizing;

/// The exit codes, as `--help` lists them.
const EXIT_ERROR: u8 = 1;
const EXIT_EXISTS: u8 = 3;

/// The most that `import` reads from stdin; real keys are a few hundred bytes.
const MAX_STDIN: u64 = 16 * 1024;

#[derive(Parser)]
#[command(
    version,
    about = "Look at, create, convert and export the key files of iroh endpoints.",
    after_help = "\
Exit codes:
  0  success
  1  error: the key file is missing, unreadable, not a key, exposed to other users, or
     cannot be written; the message on stderr names the path
  2  the command line is wrong
  3  the file or keychain entry to create exists already; it was left unchanged

Only `export` prints secret material, and only in the format asked for."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the EndpointId of a key file, without binding (like `ssh-keygen -y`).
    Id {
        /// The key file.
        path: PathBuf,
    },
    /// Generate a new key and store it; refuses to replace anything. Prints its id.
    Generate {
        /// The key file to create.
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = FileFormat::Pkcs8)]
        format: FileFormat,
    },
    /// Store the key of one file in another, in another format. Prints its id.
    Convert {
        /// The key file to read.
        input: PathBuf,
        /// The key file to create; never replaced.
        output: PathBuf,
        #[arg(long, value_enum)]
        format: FileFormat,
    },
    /// Store a key read from stdin (hex, base32 or any format that key files have), e.g.
    /// an `IROH_SECRET`. Prints its id.
    Import {
        /// The key file to create; never replaced.
        path: PathBuf,
        #[arg(long, value_enum, default_value_t = FileFormat::Pkcs8)]
        format: FileFormat,
    },
    /// Print a key file's format, EndpointId, permissions (EXPOSED when another user could
    /// read or replace it) and whether an endpoint holds it, found without taking its lock.
    Inspect {
        /// The key file.
        path: PathBuf,
    },
    /// Print the secret key in another format. The only command that prints a secret.
    Export {
        /// The key file.
        path: PathBuf,
        #[arg(long, value_enum)]
        format: TextFormat,
    },
    /// Keys in the OS secret store (built with the `keyring` feature).
    #[cfg(feature = "keyring")]
    #[command(subcommand)]
    Keychain(Keychain),
}

/// The commands on a keychain entry, named by its service and account.
#[cfg(feature = "keyring")]
#[derive(Subcommand)]
enum Keychain {
    /// Print the EndpointId of the key in an entry.
    Id { service: String, account: String },
    /// Store the key of a key file (`-`: stdin, in any format) in a new entry; refuses to
    /// replace one. Prints its id.
    Import {
        service: String,
        account: String,
        /// The key file to read, or `-` for stdin.
        input: PathBuf,
    },
    /// Store the key of an entry in a new key file; never replaced. Prints its id.
    Export {
        service: String,
        account: String,
        /// The key file to create.
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = FileFormat::Pkcs8)]
        format: FileFormat,
    },
    /// Delete an entry, and with it the identity, unless exported first. Prints its id.
    Delete {
        service: String,
        account: String,
        /// Confirms that the identity may be lost.
        #[arg(long)]
        yes: bool,
    },
}

/// The formats a key file can be written in.
#[derive(Clone, Copy, ValueEnum)]
enum FileFormat {
    /// PKCS#8 v2 PEM with the public key inside (what the library creates).
    Pkcs8,
    /// PKCS#8 v1 PEM, the secret alone (every OpenSSL reads it).
    Pkcs8V1,
    /// PKCS#8 v2 DER.
    Der,
    /// An OpenSSH private key, as `ssh-keygen -t ed25519 -N ""` writes it.
    Openssh,
    /// The 32 secret bytes.
    Raw,
    /// 64 hex characters.
    Hex,
    /// 52 base32 characters.
    Base32,
}

/// The formats `export` prints: text only.
#[derive(Clone, Copy, ValueEnum)]
enum TextFormat {
    Hex,
    Base32,
    Openssh,
    Pkcs8,
    Pkcs8V1,
}

impl From<FileFormat> for KeyFormat {
    fn from(format: FileFormat) -> Self {
        match format {
            FileFormat::Pkcs8 => Self::Pkcs8Pem,
            FileFormat::Pkcs8V1 => Self::Pkcs8PemV1,
            FileFormat::Der => Self::Pkcs8Der,
            FileFormat::Openssh => Self::OpenSsh,
            FileFormat::Raw => Self::Raw,
            FileFormat::Hex => Self::Hex,
            FileFormat::Base32 => Self::Base32,
        }
    }
}

impl From<TextFormat> for KeyFormat {
    fn from(format: TextFormat) -> Self {
        match format {
            TextFormat::Hex => Self::Hex,
            TextFormat::Base32 => Self::Base32,
            TextFormat::Openssh => Self::OpenSsh,
            TextFormat::Pkcs8 => Self::Pkcs8Pem,
            TextFormat::Pkcs8V1 => Self::Pkcs8PemV1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("iroh-identity: {}", chain(&err));
            match err {
                Failure::Key(Error::AlreadyExists { .. } | Error::KeychainEntryExists { .. }) => {
                    ExitCode::from(EXIT_EXISTS)
                }
                _ => ExitCode::from(EXIT_ERROR),
            }
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Key(#[from] Error),
    #[error("stdin is not a key")]
    Stdin(#[source] iroh_identity::KeyProblem),
    #[error("cannot read stdin")]
    ReadStdin(#[source] io::Error),
    #[error("cannot write to stdout")]
    Stdout(#[source] io::Error),
    #[cfg(feature = "keyring")]
    #[error("deleting keychain entry {0} loses its identity for good; add --yes to delete it")]
    Unconfirmed(String),
}

/// An error and its causes, as one line, as `anyhow` prints them with `{:#}`.
fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line += &format!(": {cause}");
        source = cause.source();
    }
    line
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Id { path } => say(&load_key(&path)?.public().to_string()),
        Command::Generate { path, format } => store(&path, &SecretKey::generate(), format),
        Command::Convert {
            input,
            output,
            format,
        } => store(&output, &load_key(&input)?, format),
        Command::Import { path, format } => store(&path, &read_stdin()?, format),
        Command::Inspect { path } => inspect(&path),
        Command::Export { path, format } => {
            let key = load_key(&path)?;
            let text = encode_key(&key, format.into());
            io::stdout().write_all(&text).map_err(Failure::Stdout)
        }
        #[cfg(feature = "keyring")]
        Command::Keychain(command) => keychain(command),
    }
}

#[cfg(feature = "keyring")]
fn keychain(command: Keychain) -> Result<(), Failure> {
    use iroh_identity::{delete_keychain_entry, load_keychain_key, store_new_keychain_key};
    match command {
        Keychain::Id { service, account } => {
            say(&load_keychain_key(&service, &account)?.public().to_string())
        }
        Keychain::Import {
            service,
            account,
            input,
        } => {
            let key = if input.as_os_str() == "-" {
                read_stdin()?
            } else {
                load_key(&input)?
            };
            store_new_keychain_key(&service, &account, &key)?;
            say(&key.public().to_string())
        }
        Keychain::Export {
            service,
            account,
            output,
            format,
        } => store(&output, &load_keychain_key(&service, &account)?, format),
        Keychain::Delete {
            service,
            account,
            yes,
        } => {
            let id = load_keychain_key(&service, &account)
                .map(|key| key.public().to_string())
                // An entry that is not a key can be deleted too; it has no id to print.
                .or_else(|err| match err {
                    Error::InvalidKeychainKey { .. } => Ok("(not a key)".to_owned()),
                    err => Err(err),
                })?;
            if !yes {
                return Err(Failure::Unconfirmed(format!("{service}/{account} ({id})")));
            }
            delete_keychain_entry(&service, &account)?;
            say(&id)
        }
    }
}

/// Reads a key from stdin, in any format.
fn read_stdin() -> Result<SecretKey, Failure> {
    let mut input = Zeroizing::new(Vec::with_capacity(MAX_STDIN as usize + 1));
    io::stdin()
        .take(MAX_STDIN + 1)
        .read_to_end(&mut input)
        .map_err(Failure::ReadStdin)?;
    let (key, _) = decode_key(&input).map_err(Failure::Stdin)?;
    Ok(key)
}

fn say(line: &str) -> Result<(), Failure> {
    writeln!(io::stdout(), "{line}").map_err(Failure::Stdout)
}

/// Stores the key in a new file and prints its id.
fn store(path: &Path, key: &SecretKey, format: FileFormat) -> Result<(), Failure> {
    store_new_key(path, key, format.into())?;
    say(&key.public().to_string())
}

fn inspect(path: &Path) -> Result<(), Failure> {
    let report = inspect_key(path)?;
    let verdict = match &report.refused {
        None => "private".to_owned(),
        Some(reason) => format!("EXPOSED: {reason}"),
    };
    let permissions = match report.owner {
        Some(owner) => format!("{:04o}, owner uid {}: {verdict}", owner.mode, owner.uid),
        None => verdict,
    };
    let in_use = match report.in_use {
        Some(true) => "yes, a running endpoint holds it",
        Some(false) => "no",
        None => "unknown",
    };
    say(&format!(
        "path: {}\nformat: {}\nendpoint id: {}\npermissions: {permissions}\nin use: {in_use}",
        path.display(),
        report.format,
        report.id,
    ))
}
