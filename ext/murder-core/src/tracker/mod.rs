//! An HTTP BitTorrent tracker (BEP 3, 7, 23, 48) for deploys: allow-listed,
//! short intervals, peer handout that spreads a swarm fast. Twitter's Murder
//! ran BitTornado's tracker as a separate Python process; this one runs in
//! the `murder` command or inside a Ruby process.

mod framing;
mod page;
mod peer_set;
pub mod request;
mod routes;
mod server;
pub mod swarm;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::secure::SwarmSecret;
pub use request::InfoHash;
pub use swarm::{AllowSource, Stats, Viewer};
use swarm::{Lengths, Registry};

pub const DEFAULT_PORT: u16 = 8998;
/// Peers one address other than loopback may add to a swarm unless told
/// otherwise (`TrackerConfig::max_peers_per_address`).
pub const DEFAULT_MAX_PEERS_PER_ADDRESS: usize = 256;

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// How often peers re-announce (Murder: 15 s).
    pub interval: Duration,
    /// Peers silent for longer are forgotten (default 2 × interval).
    pub peer_timeout: Option<Duration>,
    /// Peers handed out when the request names no `numwant`.
    pub default_numwant: usize,
    /// Most peers handed out whatever `numwant` asks.
    pub max_numwant: usize,
    /// Most connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Entries one source address (other than this machine's loopback) may
    /// make in a swarm: a host runs one peer, and a holder of a closed
    /// swarm's token could otherwise announce fresh peer ids without end.
    /// Hosts that reach the tracker through one NAT address need at least
    /// their number.
    pub max_peers_per_address: usize,
    /// A directory of .torrent files to allow, re-read when it changes.
    pub allow_dir: Option<PathBuf>,
    /// Every torrent allowed is a closed swarm of this secret (see
    /// `crate::secure`): announces need its token, and only holders of the
    /// token (or the operator) see it in scrapes, stats and pages.
    pub secret: Option<SwarmSecret>,
    /// Shows every torrent, closed or not, on the pages (`?token=`).
    pub operator_token: Option<String>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            interval: Duration::from_secs(15),
            peer_timeout: None,
            default_numwant: 50,
            max_numwant: 500,
            max_connections: 512,
            max_peers_per_address: DEFAULT_MAX_PEERS_PER_ADDRESS,
            allow_dir: None,
            secret: None,
            operator_token: None,
        }
    }
}

/// The most `max_connections` accepted.
const MAX_CONNECTIONS: usize = 1_000_000;

impl TrackerConfig {
    pub fn peer_timeout(&self) -> Duration {
        self.peer_timeout.unwrap_or(self.interval * 2)
    }

    /// Refuses settings that cannot work, naming the setting (the CLI and
    /// Ruby both pass theirs through here, via `Tracker::new`).
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        let secs = self.interval.as_secs();
        if !(1..=3600).contains(&secs) {
            return bad(format!("interval {secs} s: must be from 1 to 3600 seconds"));
        }
        if self.peer_timeout.is_some_and(|t| t.is_zero()) {
            return bad("peer timeout 0: peers would be forgotten at once".into());
        }
        if self.default_numwant == 0 || self.max_numwant == 0 {
            return bad("numwant 0: announces would hand out no peers".into());
        }
        if self.max_connections == 0 {
            return bad("max connections 0: the tracker would serve nobody".into());
        }
        if self.max_peers_per_address == 0 {
            return bad("max peers per address 0: no host would be recorded".into());
        }
        // Each is a descriptor; far fewer fit a process (and tokio's
        // semaphore refuses more than usize::MAX >> 3 permits).
        if self.max_connections > MAX_CONNECTIONS {
            return bad(format!(
                "max connections {}: at most {MAX_CONNECTIONS}",
                self.max_connections
            ));
        }
        if self
            .operator_token
            .as_ref()
            .is_some_and(|t| t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            return bad("operator token: at least 16 printable characters, no spaces".into());
        }
        if let Some(dir) = &self.allow_dir {
            if !dir.is_dir() {
                return bad(format!("allow dir {}: not a directory", dir.display()));
            }
        }
        Ok(())
    }
}

/// The tracker's state, shared by its connections and its owner.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<Inner>,
}

struct Inner {
    config: TrackerConfig,
    registry: Mutex<Registry>,
    counters: Counters,
}

/// What the tracker counts (for /metrics).
#[derive(Default)]
pub struct Counters {
    pub announces: std::sync::atomic::AtomicU64,
    pub announce_failures: std::sync::atomic::AtomicU64,
    pub scrapes: std::sync::atomic::AtomicU64,
}

/// Whether an allow-list entry names an info-hash rather than a .torrent
/// file: 40 hex digits, and no file of that name.
pub fn names_info_hash(spec: &str) -> bool {
    spec.len() == 40 && spec.bytes().all(|b| b.is_ascii_hexdigit()) && !Path::new(spec).exists()
}

impl Tracker {
    /// A tracker with `config`, once it is checked.
    pub fn new(config: TrackerConfig) -> Result<Self> {
        config.validate()?;
        Ok(Tracker {
            inner: Arc::new(Inner {
                registry: Mutex::new(Registry::with_source_limit(config.max_peers_per_address)),
                config,
                counters: Counters::default(),
            }),
        })
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.inner.config
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-changed
        // in a way that matters more than losing the tracker; keep serving.
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Allows the torrent; its name and size show on the status page. With
    /// the tracker's `secret`, it is a closed swarm of that secret.
    pub fn allow_torrent(&self, torrent: &Metainfo) {
        self.allow_with_source(
            torrent,
            AllowSource::Given,
            self.inner.config.secret.as_ref(),
        );
    }

    /// Allows the torrent as a closed swarm of `secret`.
    pub fn allow_closed(&self, torrent: &Metainfo, secret: &SwarmSecret) {
        self.allow_with_source(torrent, AllowSource::Given, Some(secret));
    }

    fn allow_with_source(
        &self,
        torrent: &Metainfo,
        source: AllowSource,
        secret: Option<&SwarmSecret>,
    ) {
        self.allow_entry(
            torrent.info_hash(),
            torrent.name.clone(),
            Some(Lengths {
                total: torrent.total_length(),
                data: torrent.data_length(),
            }),
            source,
            secret,
        );
    }

    /// The one way onto the allow-list: a closed swarm's token is derived
    /// here from its secret.
    fn allow_entry(
        &self,
        hash: InfoHash,
        name: String,
        lengths: Option<Lengths>,
        source: AllowSource,
        secret: Option<&SwarmSecret>,
    ) {
        let token = secret.map(|s| s.tracker_token(&hash));
        self.registry().allow(hash, name, lengths, source, token);
    }

    /// Allows a torrent by its hex info-hash.
    pub fn allow_hex(&self, hex_hash: &str) -> Result<InfoHash> {
        let hash = parse_hex_hash(hex_hash)?;
        self.allow_entry(
            hash,
            hex_hash.to_ascii_lowercase(),
            None,
            AllowSource::Given,
            self.inner.config.secret.as_ref(),
        );
        Ok(hash)
    }

    /// Allows what `spec` names: a .torrent file, or a 40-digit hex info-hash.
    pub fn allow(&self, spec: &str) -> Result<InfoHash> {
        if names_info_hash(spec) {
            return self.allow_hex(spec);
        }
        let torrent = Metainfo::load(spec)?;
        self.allow_torrent(&torrent);
        Ok(torrent.info_hash())
    }

    pub fn is_allowed(&self, hash: &InfoHash) -> bool {
        self.registry().is_allowed(hash)
    }

    /// Everything, as the operator sees it (for the tracker's owner).
    pub fn stats(&self) -> Stats {
        self.stats_for(Viewer::Operator)
    }

    pub fn stats_for(&self, viewer: Viewer) -> Stats {
        self.registry()
            .stats(tokio::time::Instant::now().into_std(), viewer)
    }

    /// Who a request's `token` makes its sender.
    pub fn viewer<'a>(&self, token: Option<&'a [u8]>) -> Viewer<'a> {
        match (&self.inner.config.operator_token, token) {
            (Some(ours), Some(theirs)) if crate::secure::tokens_match(ours.as_bytes(), theirs) => {
                Viewer::Operator
            }
            _ => Viewer::Holder(token),
        }
    }

    /// Loads every .torrent in the allow directory and drops the entries of
    /// files that are gone. Unreadable files are skipped with a warning.
    pub fn reload_allow_dir(&self) -> Result<()> {
        let Some(dir) = self.inner.config.allow_dir.clone() else {
            return Ok(());
        };
        let mut keep = Vec::new();
        for path in torrent_files(&dir)?.into_iter().map(|(p, _)| p) {
            match Metainfo::load(&path) {
                Ok(t) => {
                    let secret = self.inner.config.secret.clone();
                    self.allow_with_source(&t, AllowSource::Dir(dir.clone()), secret.as_ref());
                    keep.push(t.info_hash());
                }
                // The error names the file (Metainfo::load's errors do).
                Err(e) => tracing::warn!("allow-dir: skipping {e}"),
            }
        }
        self.registry().retain_dir_entries(&dir, &keep);
        Ok(())
    }
}

pub fn parse_hex_hash(text: &str) -> Result<InfoHash> {
    let mut hash = [0u8; 20];
    hex::decode_to_slice(text, &mut hash).map_err(|_| {
        Error::InvalidArgument(format!(
            "{text:?} is neither a .torrent file nor a 40-digit hex info-hash"
        ))
    })?;
    Ok(hash)
}

/// The .torrent files of `dir` with their modification times, sorted.
/// Files only (a link to one counts): opening a FIFO waits for a writer,
/// and a device may never end.
fn torrent_files(dir: &Path) -> Result<Vec<(PathBuf, Option<SystemTime>)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|p| p.extension().is_some_and(|e| e == "torrent"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            meta.is_file().then(|| (p, meta.modified().ok()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Serves until `shutdown` resolves: the HTTP tracker, the expiry of silent
/// peers and, if configured, the watch on the allow directory. The caller
/// loads the allow directory first (`reload_allow_dir`), so that its errors
/// show before serving starts; from then on it is re-read when it changes.
pub async fn run(
    listener: tokio::net::TcpListener,
    tracker: Tracker,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let housekeeping = tokio::spawn(housekeeping(tracker.clone()));
    let served = server::serve(listener, tracker, shutdown).await;
    housekeeping.abort();
    served.map_err(|e| Error::io("tracker", e))
}

async fn housekeeping(tracker: Tracker) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // As loaded by the caller; only a change triggers a reload.
    let mut seen_dir = tracker
        .config()
        .allow_dir
        .as_ref()
        .and_then(|dir| torrent_files(dir).ok());
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now().into_std();
        tracker
            .registry()
            .expire(now, tracker.config().peer_timeout());
        if let Some(dir) = &tracker.config().allow_dir {
            let listing = torrent_files(dir).ok();
            if listing != seen_dir {
                if let Err(e) = tracker.reload_allow_dir() {
                    tracing::warn!("allow-dir: {e}");
                }
                seen_dir = listing;
            }
        }
    }
}

/// A tracker serving on its own thread, for embedding (Ruby, tests).
/// Stopping it (or dropping it) closes the port before returning.
pub struct TrackerServer {
    tracker: Tracker,
    local_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl TrackerServer {
    pub fn start(bind: SocketAddr, config: TrackerConfig) -> Result<Self> {
        let listener = crate::listen::tcp(bind)?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(bind.to_string(), e))?;
        let tracker = Tracker::new(config)?;
        tracker.reload_allow_dir()?;
        let (tx, rx) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let served = tracker.clone();
        let thread = std::thread::Builder::new()
            .name(format!("murder-tracker-{}", local_addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| Error::io("tracker", e))?;
                    run(listener, served, async {
                        let _ = rx.await;
                    })
                    .await
                })
            })
            .map_err(|e| Error::io("tracker thread", e))?;
        Ok(TrackerServer {
            tracker,
            local_addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops serving and waits until the port is closed.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Internal("tracker thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for TrackerServer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
