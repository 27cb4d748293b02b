//! `s3-test-server`: a local S3-compatible server for the integration tests.
//!
//! A thin binary on the `s3s` / `s3s-fs` libraries (0.14.1): path-style S3 over plain HTTP on
//! `127.0.0.1:PORT`, SigV4 verified against one key pair, objects stored as files under `--root`
//! (bucket = directory, metadata in sidecar JSON files). Unlike the `s3s-fs` binary it sets
//! `TCP_NODELAY` on every connection, which avoids a ~40 ms Nagle/delayed-ACK stall per GET.
//!
//! ```text
//! s3-test-server --port 8014 --access-key test --secret-key testsecret \
//!     --root /tmp/replicator-infra/run/s3 --bucket s3db
//! ```
//!
//! Started by `tests/servers/s3.sh`. Stops gracefully on SIGTERM or SIGINT (open connections
//! get up to 5 s to finish).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(about = "Local S3-compatible test server (s3s-fs, TCP_NODELAY)")]
struct Args {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long, default_value_t = 8014)]
    port: u16,
    /// Access key id clients must sign with.
    #[arg(long)]
    access_key: String,
    /// Secret access key clients must sign with.
    #[arg(long)]
    secret_key: String,
    /// Directory holding the buckets (created if missing).
    #[arg(long)]
    root: PathBuf,
    /// Bucket to create at start (repeatable); an existing one is kept as is.
    #[arg(long = "bucket", value_name = "NAME")]
    buckets: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();

    std::fs::create_dir_all(&args.root)
        .with_context(|| format!("creating {}", args.root.display()))?;
    for bucket in &args.buckets {
        let dir = args.root.join(bucket);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let fs = s3s_fs::FileSystem::new(&args.root).map_err(|e| anyhow!("s3s-fs: {e:?}"))?;

    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(args.access_key, args.secret_key));
    let service = builder.build();

    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{}", args.port))?;
    eprintln!(
        "s3-test-server: listening on http://{}, root {}",
        listener.local_addr()?,
        args.root.display()
    );

    let http = ConnBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    loop {
        let socket = tokio::select! {
            res = listener.accept() => match res {
                Ok((socket, _)) => socket,
                Err(e) => {
                    eprintln!("s3-test-server: accept failed: {e}");
                    continue;
                }
            },
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        };
        // Without this each GET (headers, then a streamed body) waits ~40 ms on Nagle.
        if let Err(e) = socket.set_nodelay(true) {
            eprintln!("s3-test-server: set_nodelay failed: {e}");
        }
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }

    drop(listener);
    eprintln!("s3-test-server: shutting down");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(5)) => {
            eprintln!("s3-test-server: connections still open after 5 s; exiting anyway");
        }
    }
    Ok(())
}
