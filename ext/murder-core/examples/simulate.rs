//! The swarm at a scale the farm cannot hold: one seed and N downloaders in
//! one process on loopback, each a full engine session with its own upload
//! and download limit (its "link"), finding each other through murder's
//! tracker. Prints one JSON object: every downloader's finish time, T*
//! (size / rate), the seed's bytes sent and what the tracker counted. `bench/simulate` runs it and draws the chart.
//!
//!   cargo run --release -p murder-core --example simulate -- \
//!       [--peers 500] [--size 8M] [--rate 400K] [--dir /dev/shm] [--piece-length 32K] [--max-peers 64]
//!
//! Rates are bytes per second. Every session runs in one tokio runtime, as
//! many engines would on one machine; open files and sockets grow with the
//! peers (about 100 per peer), so raise `ulimit -n` first.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use murder_core::session::{completion, Role, Session, SessionConfig};
use murder_core::tracker::{TrackerConfig, TrackerServer};
use murder_core::units::parse_size;
use murder_core::{create_torrent, CreateOptions, Progress};

struct Options {
    peers: usize,
    size: u64,
    rate: u64,
    dir: PathBuf,
    piece_length: Option<u64>,
    max_peers: Option<usize>,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        peers: 500,
        size: 8 << 20,
        rate: 400 << 10,
        dir: PathBuf::from("/dev/shm"),
        piece_length: None,
        max_peers: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--peers" => options.peers = value.parse().map_err(|_| "--peers: a number")?,
            "--size" => options.size = parse_size(&value)?,
            "--rate" => options.rate = parse_size(&value)?,
            "--dir" => options.dir = PathBuf::from(value),
            "--piece-length" => options.piece_length = Some(parse_size(&value)?),
            "--max-peers" => {
                options.max_peers = Some(value.parse().map_err(|_| "--max-peers: a number")?)
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if options.peers == 0 || options.size == 0 || options.rate == 0 {
        return Err("--peers, --size and --rate must be positive".into());
    }
    Ok(options)
}

fn link(options: &Options) -> SessionConfig {
    let defaults = SessionConfig::default();
    SessionConfig {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        announce_ip: Some("127.0.0.1".parse().expect("literal address")),
        upload_limit: Some(options.rate),
        download_limit: Some(options.rate),
        max_peers: options.max_peers.unwrap_or(defaults.max_peers),
        ..defaults
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let options = options()?;
    let work = options
        .dir
        .join(format!("murder-simulate-{}", std::process::id()));
    let result = simulate(&options, &work).await;
    let _ = std::fs::remove_dir_all(&work);
    let report = result?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

async fn simulate(
    options: &Options,
    work: &std::path::Path,
) -> Result<serde_json::Value, Box<dyn Error>> {
    std::fs::create_dir_all(work.join("seed"))?;
    let data = work.join("seed/release.bin");
    let mut rng = fastrand::Rng::with_seed(2010);
    let bytes: Vec<u8> = (0..options.size).map(|_| rng.u8(..)).collect();
    std::fs::write(&data, bytes)?;

    let tracker = TrackerServer::start(
        "127.0.0.1:0".parse()?,
        TrackerConfig {
            interval: Duration::from_secs(5),
            max_connections: 1024,
            ..TrackerConfig::default()
        },
    )?;
    let mut create = CreateOptions::new(tracker.local_addr().to_string());
    create.piece_length = options.piece_length;
    let meta = Arc::new(create_torrent(&data, &create, &Progress::new())?);
    tracker.tracker().allow_torrent(&meta);

    let seed = Session::start(meta.clone(), Role::Seed { data }, link(options)).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracker
        .tracker()
        .stats()
        .torrents
        .first()
        .map_or(0, |t| t.seeds)
        == 0
    {
        if Instant::now() > deadline {
            return Err("the seed never announced".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let started = Instant::now();
    let mut peers = Vec::with_capacity(options.peers);
    let mut finishes = tokio::task::JoinSet::new();
    for i in 0..options.peers {
        let dest = work.join(format!("p{i}")).join(&meta.name);
        let session = Session::start(meta.clone(), Role::Download { dest }, link(options)).await?;
        let state = session.state();
        finishes.spawn(async move { completion(state).await.map(|()| started.elapsed()) });
        peers.push(session);
    }
    let all_started = started.elapsed();

    let t_star = options.size as f64 / options.rate as f64;
    let limit = Duration::from_secs_f64(t_star * 10.0 + 60.0);
    let mut times = Vec::with_capacity(options.peers);
    let outcome = tokio::time::timeout(limit, async {
        while let Some(done) = finishes.join_next().await {
            match done {
                Ok(Ok(elapsed)) => times.push(elapsed.as_secs_f64()),
                Ok(Err(e)) => return Err(format!("a download failed: {e}")),
                Err(e) => return Err(format!("a download task died: {e}")),
            }
        }
        Ok(())
    })
    .await;
    let seed_sent = seed.stats().uploaded;
    let swarm = tracker.tracker().stats().torrents.into_iter().next();
    let tracked = swarm.map(|t| {
        serde_json::json!({
            "seeds": t.seeds, "downloaders": t.downloaders, "completed": t.completed,
        })
    });
    for peer in peers {
        peer.shutdown().await;
    }
    seed.shutdown().await;
    match outcome {
        Err(_) => {
            return Err(format!(
                "{} of {} peers finished in {limit:?}",
                times.len(),
                options.peers
            )
            .into())
        }
        Ok(Err(e)) => return Err(e.into()),
        Ok(Ok(())) => {}
    }
    times.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "peers": options.peers,
        "size": options.size,
        "rate": options.rate,
        "piece_length": meta.piece_length,
        "t_star": t_star,
        "all_started": all_started.as_secs_f64(),
        "finishes": times,
        "seed_copies": seed_sent as f64 / options.size as f64,
        "tracker": tracked,
    }))
}
