//! Binds an endpoint whose id survives restarts, prints the id and the key file, closes.
//!
//! ```text
//! cargo run --example persistent -- [KEY_PATH]
//! ```
//!
//! Without a path the key lives in this example's per-user data directory. Run it twice:
//! the id is the same.

use std::process::ExitCode;

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
    let builder = match std::env::args_os().nth(1) {
        Some(path) => PersistentEndpoint::builder().key_path(path),
        None => PersistentEndpoint::builder().default_location(
            "com",
            "example",
            "iroh-identity-example",
        ),
    };
    let key_file = builder.key_file()?;
    let endpoint = builder.bind().await?;
    println!("endpoint id: {}", endpoint.id());
    println!("key file: {}", key_file.display());
    // Never wait for `online()` here: offline it would not return. Closing also releases
    // the identity for the next run.
    endpoint.close().await;
    Ok(())
}
