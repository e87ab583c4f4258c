//! `murder serve-file PATH --port P --clients N`: hands one file (the murder
//! binary itself, when a deploy installs it) to N hosts that fetch it, then
//! exits. A host that has the binary passes it on to the next ones, so that
//! installing murder on a fleet is no central copy. Speaks just enough HTTP
//! for curl and wget (`GET`, any path), or sends the raw bytes to a client
//! whose first line is `RAW` (bash's /dev/tcp). The fetching host checks
//! the file's SHA-256 itself.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// The most bytes of a request head read.
const MAX_REQUEST_HEAD: u64 = 16 * 1024;
use tokio::net::TcpListener;

#[derive(clap::Args)]
pub struct Args {
    /// The file to hand out.
    path: PathBuf,
    /// TCP port to listen on (all addresses).
    #[arg(long)]
    port: u16,
    /// Exit after this many complete transfers.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Exit after this many seconds in any case.
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=86_400), default_value_t = 30)]
    timeout: u64,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let bytes = std::fs::read(&args.path).map_err(|e| format!("{}: {e}", args.path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let every = std::net::SocketAddr::new(murder_core::listen::EVERY_ADDRESS, args.port);
        let listener = TcpListener::from_std(murder_core::listen::tcp(every)?)?;
        let bytes = std::sync::Arc::new(bytes);
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut served = 0;
        let deadline = tokio::time::sleep(Duration::from_secs(args.timeout));
        tokio::pin!(deadline);
        while served < args.clients {
            tokio::select! {
                _ = &mut deadline => return Err(format!("served {served} of {} hosts before the timeout", args.clients).into()),
                Some(ok) = done_rx.recv() => if ok { served += 1 },
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let (bytes, done) = (bytes.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        let ok = tokio::time::timeout(Duration::from_secs(60), send(stream, &bytes)).await;
                        let _ = done.send(matches!(ok, Ok(Ok(()))));
                    });
                }
            }
        }
        Ok(())
    })
}

async fn send(stream: tokio::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    // A request head is a few lines: a client sending more is cut off
    // rather than buffered for the whole timeout.
    let mut lines = BufReader::new(read.take(MAX_REQUEST_HEAD)).lines();
    let first = lines.next_line().await?.unwrap_or_default();
    if first.starts_with("GET ") {
        // The rest of the request head, up to its empty line.
        loop {
            match lines.next_line().await? {
                Some(line) if line.trim().is_empty() => break,
                Some(_) => {}
                None => return Err(std::io::Error::other("request head cut short or too long")),
            }
        }
        let head = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            bytes.len()
        );
        write.write_all(head.as_bytes()).await?;
    } else if first.trim() != "RAW" {
        return Err(std::io::Error::other("neither GET nor RAW"));
    }
    write.write_all(bytes).await?;
    write.shutdown().await
}
