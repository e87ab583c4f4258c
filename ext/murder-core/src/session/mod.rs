//! A torrent session: one torrent seeded or downloaded, its peers, its
//! tracker announces. Tuned for a datacenter like Murder tuned BitTornado:
//! no DHT, no encryption, no UPnP, every interested peer unchoked, short
//! timeouts, many connections. The scheduling lives in `picker`, the disk in
//! `storage`, the protocol in `wire`; this module wires them together and
//! owns shutdown.

mod announcer;
mod hasher;
mod peer;
mod rate;
mod runner;
mod steering;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha1::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;

pub use announcer::{local_address_towards, AnnounceEvent};
use announcer::{AnnounceParams, Announcer};
pub use runner::SessionRunner;

use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::picker::Picker;
use crate::progress::Progress;
use crate::storage::{verified_pieces, Storage};
use crate::wire::{write_handshake, Handshake};

/// Failed pieces a peer may send before it is banned.
const STRIKES_TO_BAN: u32 = 2;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long before dialling an address again after its connection ended.
const REDIAL: Duration = Duration::from_secs(2);
/// The same for a finished session (see `connect_loop`).
const SEED_REDIAL: Duration = Duration::from_secs(30);
/// Unsent bytes a peer socket may hold (TCP_NOTSENT_LOWAT).
#[cfg(any(target_os = "linux", target_os = "android"))]
const NOTSENT_LOWAT: u32 = 64 * 1024;

/// Connections per session unless configured. Murder allowed 64; fewer,
/// faster connections pass a fresh piece on sooner (a piece crosses a
/// connection at its share of the link) and cost less per piece in HAVE
/// messages, and 16 still reach a thousand hosts in three hops. Measured on
/// the farm at 32 hosts: 1.20-1.23 x T* against 1.31-1.38 with 64.
pub const DEFAULT_MAX_PEERS: usize = 16;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where to accept peers (port 0: any free port).
    pub listen: SocketAddr,
    /// The address announced to the tracker; `None`: the local address of
    /// the route to the tracker.
    pub announce_ip: Option<IpAddr>,
    /// Most connections (default `DEFAULT_MAX_PEERS`), at most half of
    /// them dialled by us.
    pub max_peers: usize,
    /// Peers asked of the tracker per announce.
    pub numwant: usize,
    /// Blocks kept requested from one peer.
    pub pipeline: usize,
    /// Seconds without data before a peer's requests go to others.
    pub snub_timeout: Duration,
    /// Overrides the tracker's re-announce interval.
    pub announce_interval: Option<Duration>,
    /// Peers to connect to besides those from the tracker.
    pub peers: Vec<SocketAddr>,
    /// Announce to the torrent's tracker.
    pub use_tracker: bool,
    /// Most bytes per second sent to all peers together.
    pub upload_limit: Option<u64>,
    /// Most bytes per second received from all peers together.
    pub download_limit: Option<u64>,
    /// A seed steers downloaders: it shows each only a few pieces at a time,
    /// always those sent least so far, so every piece leaves it once before
    /// any leaves twice (like BEP 16 super-seeding; standard clients follow).
    pub steer: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            listen: "0.0.0.0:0".parse().expect("literal address"),
            announce_ip: None,
            max_peers: DEFAULT_MAX_PEERS,
            numwant: 50,
            pipeline: 128,
            snub_timeout: Duration::from_secs(5),
            announce_interval: None,
            peers: Vec::new(),
            use_tracker: true,
            upload_limit: None,
            download_limit: None,
            steer: true,
        }
    }
}

/// Seed existing data, or download to a destination.
#[derive(Debug, Clone)]
pub enum Role {
    Seed { data: PathBuf },
    Download { dest: PathBuf },
}

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Downloading,
    /// Every piece is verified and, for a download, the data is at its destination.
    Complete,
    Failed(String),
}

/// A snapshot of a session's counters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Payload bytes received from peers (duplicates and failures included).
    pub downloaded: u64,
    /// Payload bytes sent to peers.
    pub uploaded: u64,
    /// Bytes of verified pieces held.
    pub have_bytes: u64,
    pub total_bytes: u64,
    pub pieces_have: usize,
    pub piece_count: usize,
    pub peers: usize,
    pub complete: bool,
    /// Every piece is held by at least one connected peer (a seed may
    /// leave: the swarm can finish without it).
    pub distributed: bool,
    pub failed_pieces: u64,
    pub banned_peers: usize,
}

/// What peers are told about through the session's broadcast.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// We verified a piece (or banned a peer): peers look again.
    Have,
    /// This block arrived; whoever else asked for it, cancel.
    Arrived { piece: u32, offset: u32, from: u64 },
    /// The download is complete.
    Complete,
    /// A steering seed's turn came free: waiting downloaders ask again.
    Offer,
}

#[derive(Default)]
struct PeerTable {
    connected: HashMap<u64, [u8; 20]>,
    /// Every connection's peer id, kept after it leaves (for late blame).
    ids: HashMap<u64, [u8; 20]>,
    addresses: HashSet<SocketAddr>,
    known: Vec<SocketAddr>,
    strikes: HashMap<[u8; 20], u32>,
    banned_ids: HashSet<[u8; 20]>,
    banned_addrs: HashSet<SocketAddr>,
    failed_until: HashMap<SocketAddr, Instant>,
}

/// For each failed piece sent by several peers: each block's hash and sender.
type Suspects = HashMap<u32, Vec<([u8; 20], u64)>>;

pub(crate) struct Shared {
    meta: Arc<Metainfo>,
    peer_id: [u8; 20],
    config: SessionConfig,
    storage: Storage,
    dest: Option<PathBuf>,
    picker: Mutex<Picker>,
    /// The picker's epoch, readable without its lock.
    pick_epoch: Arc<std::sync::atomic::AtomicU64>,
    peers: Mutex<PeerTable>,
    events: broadcast::Sender<Event>,
    state: watch::Sender<State>,
    wake_connector: Notify,
    wake_announcer: Notify,
    downloaded: AtomicU64,
    uploaded: AtomicU64,
    failed_pieces: AtomicU64,
    next_key: AtomicU64,
    listen_port: u16,
    /// Failed pieces from several peers: each block's hash and sender.
    suspects: Mutex<Suspects>,
    /// A seed's choice of what to send to whom (`None` when downloading
    /// or when steering is off).
    steering: Option<steering::Steering>,
    hasher: hasher::Hasher,
    upload_limit: Option<rate::RateLimit>,
    download_limit: Option<rate::RateLimit>,
}

impl Shared {
    fn picker(&self) -> MutexGuard<'_, Picker> {
        self.picker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn suspects(&self) -> MutexGuard<'_, Suspects> {
        self.suspects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peers(&self) -> MutexGuard<'_, PeerTable> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_complete(&self) -> bool {
        *self.state.borrow() == State::Complete
    }

    /// Bytes of the verified pieces.
    fn have_bytes(&self, picker: &Picker) -> u64 {
        let layout = self.storage.layout();
        picker
            .have()
            .iter_ones()
            .map(|p| layout.piece_range(p).1)
            .sum()
    }

    fn left(&self) -> u64 {
        self.storage.layout().total_length() - self.have_bytes(&self.picker())
    }

    pub(crate) fn stats(&self) -> Stats {
        let (pieces_have, have_bytes, distributed) = {
            let picker = self.picker();
            (
                picker.have().count(),
                self.have_bytes(&picker),
                picker.swarm_has_all(),
            )
        };
        let peers = self.peers();
        Stats {
            downloaded: self.downloaded.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            have_bytes,
            total_bytes: self.storage.layout().total_length(),
            pieces_have,
            piece_count: self.meta.piece_count(),
            peers: peers.connected.len(),
            complete: self.is_complete(),
            distributed,
            failed_pieces: self.failed_pieces.load(Ordering::Relaxed),
            banned_peers: peers.banned_ids.len(),
        }
    }

    /// Registers a handshaken peer; `None` if it is us, banned, already
    /// connected, or one too many. A banned peer's address is banned too.
    fn admit(&self, peer_id: [u8; 20], addr: Option<SocketAddr>) -> Option<u64> {
        let mut peers = self.peers();
        if peers.banned_ids.contains(&peer_id) {
            if let Some(addr) = addr {
                peers.banned_addrs.insert(addr);
            }
            return None;
        }
        if peer_id == self.peer_id
            || peers.connected.values().any(|id| *id == peer_id)
            || peers.connected.len() >= self.config.max_peers
        {
            return None;
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        peers.connected.insert(key, peer_id);
        peers.ids.insert(key, peer_id);
        if let Some(addr) = addr {
            peers.addresses.insert(addr);
        }
        Some(key)
    }

    fn leave(&self, key: u64, addr: Option<SocketAddr>) {
        let mut peers = self.peers();
        peers.connected.remove(&key);
        if let Some(addr) = addr {
            peers.addresses.remove(&addr);
            peers
                .failed_until
                .insert(addr, Instant::now() + Duration::from_secs(2));
        }
        drop(peers);
        self.wake_connector.notify_one();
    }

    /// A piece sent entirely by one connection failed its hash: strike it;
    /// repeat offenders are banned.
    fn strike(&self, key: u64) {
        let mut peers = self.peers();
        let Some(&id) = peers.ids.get(&key) else {
            return;
        };
        let strikes = peers.strikes.entry(id).or_insert(0);
        *strikes += 1;
        if *strikes >= STRIKES_TO_BAN {
            peers.banned_ids.insert(id);
        }
    }

    /// A connection proven to have sent corrupt data.
    fn ban(&self, key: u64) {
        let mut peers = self.peers();
        if let Some(&id) = peers.ids.get(&key) {
            peers.banned_ids.insert(id);
        }
    }

    fn is_banned(&self, key: u64) -> bool {
        let peers = self.peers();
        peers
            .ids
            .get(&key)
            .is_some_and(|id| peers.banned_ids.contains(id))
    }

    fn ban_address(&self, addr: SocketAddr) {
        self.peers().banned_addrs.insert(addr);
    }
}

/// A running session. Dropping it without `shutdown` stops its tasks.
pub struct Session {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    local_addr: SocketAddr,
}

impl Session {
    /// Checks the data (seeding) or the staging area (download: verified
    /// pieces from an earlier run are kept), starts listening, announcing
    /// and connecting.
    pub async fn start(meta: Arc<Metainfo>, role: Role, config: SessionConfig) -> Result<Session> {
        let progress = Progress::new();
        let (storage, have, dest) = {
            let meta = meta.clone();
            let role = role.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                match role {
                    Role::Seed { data } => {
                        let have = verified_pieces(&meta, &data, &progress)?;
                        if !have.is_complete() {
                            return Err(Error::InvalidArgument(format!(
                                "{}: only {} of {} pieces match the torrent; cannot seed",
                                data.display(),
                                have.count(),
                                have.len()
                            )));
                        }
                        Ok((Storage::for_seeding(meta, &data), have, None))
                    }
                    Role::Download { dest } => {
                        if dest.exists() {
                            let have = verified_pieces(&meta, &dest, &progress)?;
                            if have.is_complete() {
                                return Ok((Storage::for_seeding(meta, &dest), have, None));
                            }
                            return Err(Error::InvalidArgument(format!(
                                "{}: already exists and is not this torrent's data; remove it first",
                                dest.display()
                            )));
                        }
                        let (storage, have) = Storage::for_download(meta, &dest, &progress)?;
                        Ok((storage, have, Some(dest)))
                    }
                }
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| Error::io(config.listen.to_string(), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(config.listen.to_string(), e))?;
        let complete = have.is_complete();
        // A download whose staging area was complete still needs its rename.
        let initial = if complete && dest.is_none() {
            State::Complete
        } else {
            State::Downloading
        };
        let (events, _) = broadcast::channel(4096);
        let seeding = matches!(role, Role::Seed { .. });
        let steering = (seeding && config.steer)
            .then(|| steering::Steering::new(have.len(), storage.layout().piece_length()));
        let picker = Picker::new(storage.layout().clone(), have);
        let upload_limit = config.upload_limit.map(rate::RateLimit::new);
        let download_limit = config.download_limit.map(rate::RateLimit::new);
        let shared = Arc::new(Shared {
            peer_id: new_peer_id(),
            pick_epoch: picker.epoch(),
            picker: Mutex::new(picker),
            storage,
            dest,
            meta,
            peers: Mutex::new(PeerTable {
                known: config.peers.clone(),
                ..PeerTable::default()
            }),
            config,
            events,
            state: watch::channel(initial).0,
            wake_connector: Notify::new(),
            wake_announcer: Notify::new(),
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            failed_pieces: AtomicU64::new(0),
            next_key: AtomicU64::new(1),
            suspects: Mutex::new(HashMap::new()),
            steering,
            hasher: hasher::Hasher::start().map_err(|e| Error::io("hasher thread", e))?,
            listen_port: local_addr.port(),
            upload_limit,
            download_limit,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if complete && shared.dest.is_some() {
            tasks.spawn(finish(shared.clone()));
        }
        tasks.spawn(accept(shared.clone(), listener, shutdown_rx.clone()));
        tasks.spawn(connect_loop(shared.clone(), shutdown_rx.clone()));
        if shared.config.use_tracker {
            if let Some(url) = shared.meta.announce.clone() {
                tasks.spawn(announce_loop(
                    shared.clone(),
                    Announcer::new(url),
                    shutdown_rx.clone(),
                ));
            }
        }
        Ok(Session {
            shared,
            shutdown,
            tasks,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn state(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// Resolves when the download is complete (at once for a seed).
    pub async fn wait_complete(&self) -> Result<()> {
        completion(self.state()).await
    }

    /// Announces `stopped`, closes every connection and stops.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let drained = tokio::time::timeout(Duration::from_secs(3), async {
            while self.tasks.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            self.tasks.abort_all();
        }
    }
}

/// Resolves when the session behind `state` completes, or fails.
pub async fn completion(mut state: watch::Receiver<State>) -> Result<()> {
    loop {
        match &*state.borrow_and_update() {
            State::Complete => return Ok(()),
            State::Failed(reason) => return Err(Error::Internal(reason.clone())),
            State::Downloading => {}
        }
        if state.changed().await.is_err() {
            return Err(Error::Internal("session ended".into()));
        }
    }
}

fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-MU0100-000000000000";
    let version = env!("CARGO_PKG_VERSION").replace('.', "");
    let digits = version.as_bytes();
    for (i, b) in digits.iter().take(4).enumerate() {
        id[3 + i] = *b;
    }
    for b in &mut id[8..] {
        *b = fastrand::alphanumeric() as u8;
    }
    id
}

async fn accept(shared: Arc<Shared>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let mut peers = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => accepted,
        };
        while peers.try_join_next().is_some() {}
        let Ok((stream, remote)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        peers.spawn(async move {
            tune(&stream, &shared);
            let mut stream = stream;
            let Ok(Ok(theirs)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, Handshake::read(&mut stream)).await
            else {
                return;
            };
            if theirs.info_hash != shared.meta.info_hash() {
                return;
            }
            let Some(key) = shared.admit(theirs.peer_id, None) else {
                return;
            };
            tracing::debug!("peer {remote} (incoming) connected");
            let ours = Handshake::new(shared.meta.info_hash(), shared.peer_id);
            if write_handshake(&mut stream, &ours).await.is_ok() {
                let result = peer::run(shared.clone(), stream, key, theirs, shutdown).await;
                tracing::debug!("peer {remote} (incoming) left: {result:?}");
            }
            shared.leave(key, None);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while peers.join_next().await.is_some() {}
    })
    .await;
}

async fn connect_loop(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut peers = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        while peers.try_join_next().is_some() {}
        let candidates: Vec<SocketAddr> = {
            let mut table = shared.peers();
            let now = Instant::now();
            table.failed_until.retain(|_, until| *until > now);
            // Half the slots at most are ours to dial: the rest stay open
            // for peers that join later, which would otherwise find every
            // earlier peer full.
            let dial_share = shared.config.max_peers.div_ceil(2);
            let room = shared
                .config
                .max_peers
                .saturating_sub(table.connected.len())
                .min(dial_share.saturating_sub(table.addresses.len()));
            let mut picked = Vec::new();
            for addr in table.known.clone() {
                if picked.len() >= room {
                    break;
                }
                if !table.addresses.contains(&addr)
                    && !table.banned_addrs.contains(&addr)
                    && !table.failed_until.contains_key(&addr)
                    && addr.port() != 0
                {
                    picked.push(addr);
                }
            }
            for addr in &picked {
                table.addresses.insert(*addr);
            }
            picked
        };
        for addr in candidates {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            peers.spawn(async move {
                let result = connect(shared.clone(), addr, shutdown).await;
                tracing::debug!("peer {addr} left: {result:?}");
                // A seed dials again slowly: whoever it lost is most likely
                // a seed too, and downloaders dial seeds themselves.
                let pause = if shared.is_complete() {
                    SEED_REDIAL
                } else {
                    REDIAL
                };
                let mut table = shared.peers();
                table.addresses.remove(&addr);
                table.failed_until.insert(addr, Instant::now() + pause);
            });
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = shared.wake_connector.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while peers.join_next().await.is_some() {}
    })
    .await;
}

/// Socket options for a peer connection: no Nagle delay (requests are
/// small and latency is what matters), and under a rate limit, socket
/// buffers the size of a capped link's queue.
fn tune(stream: &TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    // Unsent bytes the kernel holds per socket: the rest waits in our
    // upload queue, where a rarer piece can still pass it.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_tcp_notsent_lowat(NOTSENT_LOWAT);
    if let Some(limit) = &shared.download_limit {
        let _ = socket.set_recv_buffer_size(limit.socket_buffer());
    }
    if let Some(limit) = &shared.upload_limit {
        let _ = socket.set_send_buffer_size(limit.socket_buffer());
    }
}

async fn connect(
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    tune(&stream, &shared);
    let ours = Handshake::new(shared.meta.info_hash(), shared.peer_id);
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        write_handshake(&mut stream, &ours).await?;
        Handshake::read(&mut stream).await
    })
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if theirs.info_hash != shared.meta.info_hash() {
        shared.ban_address(addr);
        return Err("different torrent".into());
    }
    if theirs.peer_id == shared.peer_id {
        shared.ban_address(addr); // ourselves
        return Err("connected to ourselves".into());
    }
    let Some(key) = shared.admit(theirs.peer_id, Some(addr)) else {
        return Err("not admitted".into());
    };
    let result = peer::run(shared.clone(), stream, key, theirs, shutdown).await;
    if shared.is_banned(key) {
        shared.ban_address(addr);
    }
    shared.leave(key, Some(addr));
    result.map_err(|e| e.to_string())
}

async fn announce_loop(
    shared: Arc<Shared>,
    announcer: Announcer,
    mut shutdown: watch::Receiver<bool>,
) {
    let ip = match shared.config.announce_ip {
        Some(ip) => Some(ip),
        None => local_address_towards(announcer.url()).await,
    };
    let params = |event| AnnounceParams {
        info_hash: shared.meta.info_hash(),
        peer_id: shared.peer_id,
        port: shared.listen_port,
        uploaded: shared.uploaded.load(Ordering::Relaxed),
        downloaded: shared.downloaded.load(Ordering::Relaxed),
        left: shared.left(),
        event,
        ip,
        numwant: shared.config.numwant,
    };
    let mut event = AnnounceEvent::Started;
    let mut completed_sent = shared.is_complete();
    let mut failures = 0u32;
    loop {
        let mut wait = match announcer.announce(&params(event)).await {
            Ok(reply) => {
                failures = 0;
                tracing::debug!("announce {event:?}: {} peers", reply.peers.len());
                if event == AnnounceEvent::Completed {
                    completed_sent = true;
                }
                event = AnnounceEvent::Regular;
                {
                    let mut table = shared.peers();
                    for addr in reply.peers {
                        if !table.known.contains(&addr) {
                            table.known.push(addr);
                        }
                    }
                }
                shared.wake_connector.notify_one();
                shared
                    .config
                    .announce_interval
                    .or(reply.interval)
                    .unwrap_or(Duration::from_secs(15))
                    .max(Duration::from_secs(1))
            }
            Err(e) => {
                tracing::warn!("{e}");
                failures += 1;
                Duration::from_secs((1u64 << failures.min(4)).min(15))
            }
        };
        // A downloader with few peers asks again soon.
        if !shared.is_complete() && shared.peers().connected.len() < 4 {
            wait = wait.min(Duration::from_secs(2));
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = shared.wake_announcer.notified() => {}
        }
        if shared.is_complete() && !completed_sent {
            event = AnnounceEvent::Completed;
        }
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        announcer.announce(&params(AnnounceEvent::Stopped)),
    )
    .await;
}

/// Verifies a fully received piece off the async threads. A failed piece
/// sent by one peer strikes that peer. A failed piece sent by several keeps
/// the hash of each block; once the piece passes, the peers whose blocks
/// differed from the good ones are banned and the others are left alone.
pub(crate) fn verify_piece(shared: Arc<Shared>, piece: u32) {
    tokio::spawn(async move {
        let (_, length) = shared.storage.layout().piece_range(piece as usize);
        let digest = match shared.hasher.finish(piece, length).await {
            Some(digest) => Some(digest),
            None => {
                let hashing = shared.clone();
                tokio::task::spawn_blocking(move || hashing.storage.hash_piece(piece).ok())
                    .await
                    .unwrap_or(None)
            }
        };
        let ok = digest == Some(shared.meta.pieces[piece as usize]);
        let (sources, complete) = {
            let mut picker = shared.picker();
            let sources = picker.verified(piece, ok);
            (sources, picker.is_complete())
        };
        let suspects = shared.suspects().remove(&piece);
        if ok {
            if let Some(bad) = suspects {
                let good = block_hashes(&shared, piece).await;
                for ((bad_hash, source), good_hash) in bad.iter().zip(good) {
                    if *bad_hash != good_hash {
                        shared.ban(*source);
                    }
                }
            }
            let _ = shared.events.send(Event::Have);
            if complete {
                finish(shared).await;
            }
        } else {
            shared.failed_pieces.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("piece {piece} failed its hash check; fetching it again");
            let mut distinct = sources.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if let [only] = distinct[..] {
                shared.strike(only);
            } else {
                let hashes = block_hashes(&shared, piece).await;
                let blocks = hashes.into_iter().zip(sources).collect();
                shared.suspects().insert(piece, blocks);
            }
            // Banned peers notice on their next event and disconnect.
            let _ = shared.events.send(Event::Have);
        }
    });
}

/// SHA-1 of each 16 KiB block of a piece as it is on disk.
async fn block_hashes(shared: &Arc<Shared>, piece: u32) -> Vec<[u8; 20]> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let (_, len) = shared.storage.layout().piece_range(piece as usize);
        let mut buf = vec![0u8; crate::wire::BLOCK as usize];
        let mut hashes = Vec::new();
        let mut offset = 0u64;
        while offset < len {
            let n = (len - offset).min(buf.len() as u64) as usize;
            let hash = match shared.storage.read(piece, offset as u32, &mut buf[..n]) {
                Ok(()) => sha1::Sha1::digest(&buf[..n]).into(),
                Err(_) => [0; 20],
            };
            hashes.push(hash);
            offset += n as u64;
        }
        hashes
    })
    .await
    .unwrap_or_default()
}

/// Every piece is verified: move the data to its destination.
async fn finish(shared: Arc<Shared>) {
    let result = match shared.dest.clone() {
        Some(dest) => {
            let storage_owner = shared.clone();
            tokio::task::spawn_blocking(move || storage_owner.storage.finish(&dest))
                .await
                .map_err(|e| Error::Internal(e.to_string()))
                .and_then(|r| r)
        }
        None => Ok(()),
    };
    match result {
        Ok(()) => {
            shared.state.send_replace(State::Complete);
            let _ = shared.events.send(Event::Complete);
            shared.wake_announcer.notify_one();
        }
        Err(e) => {
            shared.state.send_replace(State::Failed(e.to_string()));
        }
    }
}
