//! bench/tracker's load generator: CLIENTS tasks announce to an HTTP tracker
//! for SECONDS, each on a new TCP connection per announce (`--mode new`,
//! what most BitTorrent clients do) or on one kept-alive connection
//! (`--mode keepalive`). Peers are drawn from a pool of `--pool` ids per
//! info-hash, so the swarms stay the same size through a run. `--fill N`
//! instead announces N distinct peers once each (for the RSS of a full
//! tracker) and exits. Prints one JSON line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    New,
    Keepalive,
}

#[derive(Parser)]
struct Args {
    /// The tracker, IP:PORT.
    #[arg(long)]
    tracker: SocketAddr,
    /// Path of the announce (murder and opentracker: /announce).
    #[arg(long, default_value = "/announce")]
    path: String,
    /// Hex info-hashes the tracker allows (comma-separated).
    #[arg(long, value_delimiter = ',')]
    hashes: Vec<String>,
    #[arg(long, value_enum, default_value_t = Mode::New)]
    mode: Mode,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Peer ids per info-hash.
    #[arg(long, default_value_t = 1000)]
    pool: u32,
    /// Announce this many distinct peers once each, then exit.
    #[arg(long)]
    fill: Option<u64>,
}

fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// The request line and headers of one announce.
fn announce(args: &Args, hash: &[u8; 20], peer: u64, rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut id = *b"-BT0001-000000000000";
    id[8..20].copy_from_slice(format!("{peer:012}").as_bytes());
    let port = 1024 + (peer % 60000) as u16;
    let left = if rng.u8(..) < 32 { 0 } else { 1_000_000 };
    let ip = 0x0a00_0000u32 + (peer as u32 & 0x00ff_ffff);
    let close = if args.mode == Mode::New {
        "Connection: close\r\n"
    } else {
        ""
    };
    format!(
        "GET {}?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}&compact=1&numwant=50&ip={}.{}.{}.{} HTTP/1.1\r\nHost: tracker\r\n{close}\r\n",
        args.path,
        escape(hash),
        escape(&id),
        ip >> 24,
        (ip >> 16) & 255,
        (ip >> 8) & 255,
        ip & 255,
    )
    .into_bytes()
}

/// Reads one HTTP response (head + Content-Length body) off `stream`, with
/// `buf` holding what was read beyond it. Returns whether the status was 200
/// and the body no bencoded failure, and whether the server keeps the
/// connection open for another request.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(bool, bool)> {
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let body_start = end + 4;
            match length {
                Some(n) => {
                    while buf.len() < body_start + n {
                        let got = stream.read(&mut chunk).await?;
                        if got == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                        buf.extend_from_slice(&chunk[..got]);
                    }
                    let ok = head.starts_with("http/1.1 200") || head.starts_with("http/1.0 200");
                    let failed = buf[body_start..body_start + n]
                        .windows(14)
                        .any(|w| w == b"failure reason");
                    buf.drain(..body_start + n);
                    let http10 = head.starts_with("http/1.0");
                    let keep = if http10 {
                        head.contains("connection: keep-alive")
                    } else {
                        !head.contains("connection: close")
                    };
                    return Ok((ok && !failed, keep));
                }
                None => {
                    // No length: the body runs to the end of the connection.
                    loop {
                        let got = stream.read(&mut chunk).await?;
                        if got == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..got]);
                    }
                    let ok = head.contains(" 200");
                    let failed = buf[body_start..]
                        .windows(14)
                        .any(|w| w == b"failure reason");
                    buf.clear();
                    return Ok((ok && !failed, false));
                }
            }
        }
        let got = stream.read(&mut chunk).await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Why an announce got no reply.
enum Failure {
    /// The kept connection was closed before the reply began: the server
    /// keeps connections only in name.
    Stale,
    Io(std::io::Error),
}

/// One announce on the kept connection or a new one.
async fn exchange(
    args: &Args,
    kept: &mut Option<TcpStream>,
    buf: &mut Vec<u8>,
    request: &[u8],
) -> Result<bool, Failure> {
    let reused = kept.is_some();
    let mut stream = match kept.take() {
        Some(s) => s,
        None => {
            buf.clear();
            TcpStream::connect(args.tracker)
                .await
                .map_err(Failure::Io)?
        }
    };
    let outcome = async {
        stream.set_nodelay(true)?;
        stream.write_all(request).await?;
        read_response(&mut stream, buf).await
    }
    .await;
    match outcome {
        Ok((ok, keep)) => {
            if args.mode == Mode::Keepalive && keep {
                *kept = Some(stream);
            }
            Ok(ok)
        }
        Err(_) if reused && buf.is_empty() => Err(Failure::Stale),
        Err(e) => Err(Failure::Io(e)),
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
}

async fn client(
    args: Arc<Args>,
    hashes: Arc<Vec<[u8; 20]>>,
    index: usize,
    until: Instant,
    tally: Arc<Tally>,
    next_peer: Arc<AtomicU64>,
) -> Vec<Duration> {
    let mut rng = fastrand::Rng::with_seed(index as u64);
    let mut latencies = Vec::new();
    let mut kept: Option<TcpStream> = None;
    let mut buf = Vec::new();
    while Instant::now() < until {
        let peer = match args.fill {
            Some(n) => {
                let p = next_peer.fetch_add(1, Ordering::Relaxed);
                if p >= n {
                    break;
                }
                p
            }
            None => rng.u64(..args.pool as u64),
        };
        let hash = &hashes[(peer as usize) % hashes.len()];
        let request = announce(&args, hash, peer, &mut rng);
        let started = Instant::now();
        let mut result = exchange(&args, &mut kept, &mut buf, &request).await;
        if let Err(Failure::Stale) = result {
            // A server that kept the connection only in name (opentracker
            // answers HTTP/1.1 without `Connection: close` and then closes):
            // count it and ask again on a new connection.
            tally.reconnects.fetch_add(1, Ordering::Relaxed);
            result = exchange(&args, &mut kept, &mut buf, &request).await;
        }
        if result.is_ok() && args.mode == Mode::Keepalive && kept.is_none() {
            tally.reconnects.fetch_add(1, Ordering::Relaxed); // `Connection: close`
        }
        match result {
            Ok(true) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                latencies.push(started.elapsed());
            }
            Ok(false) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                if tally.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    if let Failure::Io(e) = failure {
                        eprintln!("tracker-load: first error: {e}");
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    latencies
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(Args::parse());
    let hashes: Vec<[u8; 20]> = args
        .hashes
        .iter()
        .map(|h| {
            let mut out = [0u8; 20];
            hex::decode_to_slice(h, &mut out).map(|_| out)
        })
        .collect::<Result<_, _>>()?;
    if hashes.is_empty() {
        return Err("give --hashes".into());
    }
    let hashes = Arc::new(hashes);
    // One worker: the other core is the tracker's.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let tally = Arc::new(Tally::default());
    let next_peer = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let seconds = if args.fill.is_some() {
        3600.0
    } else {
        args.seconds
    };
    let until = started + Duration::from_secs_f64(seconds);
    let mut latencies: Vec<Duration> = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                tokio::spawn(client(
                    args.clone(),
                    hashes.clone(),
                    i,
                    until,
                    tally.clone(),
                    next_peer.clone(),
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "announces": ok,
            "failed": tally.failed.load(Ordering::Relaxed),
            "errors": tally.errors.load(Ordering::Relaxed),
            "reconnects": tally.reconnects.load(Ordering::Relaxed),
            "seconds": elapsed,
            "per_second": ok as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        })
    );
    Ok(())
}
