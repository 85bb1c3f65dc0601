//! Binds an endpoint whose id survives restarts, prints the id and where its key is kept,
//! closes.
//!
//! ```text
//! cargo run --example persistent -- [KEY_PATH]
//! cargo run --example persistent --features keyring -- --keychain SERVICE
//! ```
//!
//! Without a path the key lives in this example's per-user data directory. With
//! `--keychain` it lives in the OS secret store, in the entry `SERVICE`/`endpoint`. Run it
//! twice: the id is the same.

use std::process::ExitCode;

use iroh_identity::{Identity, KeyLocation, KeySource};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let location = match args.as_slice() {
        #[cfg(feature = "keyring")]
        [flag, service] if flag == "--keychain" => {
            let service = service
                .to_str()
                .ok_or_else(|| anyhow::anyhow!("the service name must be UTF-8"))?;
            KeyLocation::keychain(service, "endpoint")
        }
        [path] => KeyLocation::file(path),
        [] => KeyLocation::default_for("com", "example", "iroh-identity-example"),
        _ => anyhow::bail!("usage: persistent [KEY_PATH | --keychain SERVICE]"),
    };
    let source = location.resolve()?;
    let endpoint = Identity::builder(location).bind().await?;
    println!("endpoint id: {}", endpoint.id());
    match source {
        KeySource::File { path } => println!("key file: {}", path.display()),
        KeySource::Keychain { service, account } => {
            println!("keychain entry: {service}/{account}");
        }
        other => println!("key: {other:?}"),
    }
    // Never wait for `online()` here: offline it would not return. Closing also releases
    // the identity for the next run.
    endpoint.close().await;
    Ok(())
}
