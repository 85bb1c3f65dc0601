//! Binds an endpoint whose id survives restarts, prints the id and the key file, closes.
//!
//! ```text
//! cargo run --example persistent -- [KEY_PATH]
//! ```
//!
//! Without a path the key lives in this example's per-user data directory. Run it twice:
//! the id is the same.

use std::{path::PathBuf, process::ExitCode};

use iroh_identity::PersistentEndpoint;

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
    let path = match std::env::args_os().nth(1) {
        Some(path) => PathBuf::from(path),
        None => iroh_identity::default_key_path("com", "example", "iroh-identity-example")?,
    };
    let endpoint = PersistentEndpoint::open(&path).await?;
    println!("endpoint id: {}", endpoint.id());
    println!("key file: {}", path.display());
    // Never wait for `online()` here: offline it would not return. Closing also releases
    // the identity for the next run.
    endpoint.close().await;
    Ok(())
}
