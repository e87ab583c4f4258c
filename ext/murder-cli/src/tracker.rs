//! `murder tracker`: the HTTP tracker, in the foreground or as a daemon.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use murder_core::tracker::{
    self, Tracker, TrackerConfig, DEFAULT_MAX_PEERS_PER_ADDRESS, DEFAULT_PORT,
};

use crate::daemon::{self, Pidfile, Ready};

#[derive(clap::Args)]
pub struct Args {
    /// TCP port to serve on (0 picks a free one and prints it).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Address to bind (`::`: every address, IPv6 and IPv4).
    #[arg(long, default_value = "::")]
    bind: IpAddr,
    /// Allow a torrent: a .torrent file or a 40-digit hex info-hash (repeatable).
    #[arg(long, value_name = "FILE_OR_HASH")]
    allow: Vec<String>,
    /// Allow every .torrent in DIR; re-read when it changes.
    #[arg(long, value_name = "DIR")]
    allow_dir: Option<PathBuf>,
    /// Seconds between announces that peers are told to keep.
    #[arg(long, default_value_t = 15)]
    interval: u64,
    /// Forget peers silent for this many seconds [default: 2 × interval].
    #[arg(long)]
    peer_timeout: Option<u64>,
    /// Peers handed out when a client names no numwant.
    #[arg(long, default_value_t = 50)]
    numwant: usize,
    /// Most connections served at once.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Peers one address (other than this machine's) may add to a swarm:
    /// raise it when more hosts than this reach the tracker through one NAT
    /// address.
    #[arg(long, default_value_t = DEFAULT_MAX_PEERS_PER_ADDRESS)]
    max_peers_per_address: usize,
    /// Write the process id here (removed on exit); `murder stop --pidfile` stops it.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// Run in the background (needs --pidfile).
    #[arg(long, requires = "pidfile")]
    daemon: bool,
    /// Where a daemon writes its log [default: nowhere]; needs --daemon (in
    /// the foreground, logs go to stderr).
    #[arg(long, requires = "daemon")]
    log: Option<PathBuf>,
    /// Every allowed torrent is a closed swarm of the secret in FILE (64 hex
    /// digits, readable by its owner alone): announces need the token
    /// derived from it, and only its holders see the torrent.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// The pages show every torrent with `?token=` the token in FILE
    /// (readable by its owner alone).
    #[arg(long, value_name = "FILE")]
    operator_token_file: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = TrackerConfig {
        interval: Duration::from_secs(args.interval),
        peer_timeout: args.peer_timeout.map(Duration::from_secs),
        default_numwant: args.numwant,
        allow_dir: args.allow_dir.clone(),
        max_connections: args.max_connections,
        max_peers_per_address: args.max_peers_per_address,
        secret: args
            .secret_file
            .as_deref()
            .map(murder_core::secure::SwarmSecret::load)
            .transpose()?,
        operator_token: args
            .operator_token_file
            .as_deref()
            .map(murder_core::secure::read_private)
            .transpose()?,
        ..TrackerConfig::default()
    };
    let tracker = Tracker::new(config)?;
    for spec in &args.allow {
        tracker.allow(spec)?;
    }
    tracker.reload_allow_dir()?;
    // The tracker that holds our pidfile holds our port too: it goes first.
    if let Some(path) = args.pidfile.as_deref() {
        Pidfile::take_over(path)?;
    }
    // Bind before detaching, so a taken port fails in the foreground.
    let bind = SocketAddr::new(args.bind, args.port);
    let listener = murder_core::listen::tcp(bind).map_err(|e| format!("bind {e}"))?;
    let addr = listener.local_addr()?;

    let mut ready = if args.daemon {
        daemon::detach(args.log.as_deref())?
    } else {
        Ready::foreground()
    };
    let pidfile = args.pidfile.as_deref().map(Pidfile::write).transpose();
    let _pidfile = ready.failing(pidfile)?;
    // One thread, like the in-process tracker: an announce is a few
    // microseconds of work, and waking other worker threads for each
    // connection costs more than it (measured with bench/tracker).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let runtime = ready.failing(runtime)?;
    runtime.block_on(async move {
        let listener = ready.failing(tokio::net::TcpListener::from_std(listener))?;
        let allowed = tracker.stats().torrents.len();
        ready.report(&format!(
            "murder tracker on http://{addr}/announce ({allowed} torrents allowed)"
        ));
        tracker::run(listener, tracker, crate::signals::terminated()).await?;
        Ok(())
    })
}
