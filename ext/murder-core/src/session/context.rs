//! What every task of one session shares. The locks here follow the order
//! written in STATE.md: `pieces` before `steering`; `admission`, the
//! reporter and storage's file table are leaves, never held while another
//! lock is taken; no lock is held across an await or a disk write.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::Admission;
use super::config::SessionConfig;
use super::hasher::{Hasher, Verdict};
use super::rate::RateLimit;
use super::report::Phases;
use super::steering::Steering;
use super::{State, Stats};
use crate::bitfield::Bitfield;
use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::picker::Picker;
use crate::secure::SwarmKey;
use crate::storage::Storage;

/// What peers are told about through the session's broadcast.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// We verified a piece (or banned a peer): peers look again.
    Have,
    /// This block was accepted; whoever else asked for it, cancel.
    Accepted { piece: u32, offset: u32, from: u64 },
    /// The download is complete.
    Complete,
    /// A steering seed's turn came free: waiting downloaders ask again.
    Offer,
}

/// When each phase of the session ended (for `Phases`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timeline {
    pub started: Option<Instant>,
    pub serving: Option<Instant>,
    pub verified: Option<Instant>,
    pub placed: Option<Instant>,
    /// Staged, waiting for `Session::place` to be called.
    pub waited: std::time::Duration,
}

pub(crate) struct Context {
    pub meta: Arc<Metainfo>,
    pub peer_id: [u8; 20],
    pub config: SessionConfig,
    pub storage: Arc<Storage>,
    /// Where a download goes once complete (`None`: seeding).
    pub dest: Option<PathBuf>,
    pieces: Mutex<Picker>,
    /// The picker's epoch, readable without its lock.
    pub pick_epoch: Arc<AtomicU64>,
    pub admission: Admission,
    pub events: broadcast::Sender<Event>,
    pub state: watch::Sender<State>,
    pub wake_dialer: Notify,
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub failed_pieces: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Connected peers that hold every piece.
    pub seeds_connected: AtomicUsize,
    pub listen_port: u16,
    /// Bytes held before the download started.
    pub reused_bytes: u64,
    /// A seed's choice of what to send to whom (`None` when downloading
    /// or when steering is off).
    pub steering: Option<Steering>,
    pub hasher: Hasher,
    pub upload_limit: Option<RateLimit>,
    pub download_limit: Option<RateLimit>,
    /// This session seeds data it did not download.
    pub seeding: bool,
    /// A complete download stopped serving: its data broke under it (rule
    /// W1). Its peers are choked; the download itself stays complete.
    pub serving_stopped: AtomicBool,
    /// With a lazy check: the pieces checked against their hash since the
    /// seed started (one bit each); `None` when all were checked up front.
    checked: Option<Vec<AtomicU64>>,
    /// Fires once, on shutdown: every task ends when it does.
    pub cancel: CancellationToken,
    /// Every task of the session, so shutdown can wait for them all.
    pub tasks: TaskTracker,
    timeline: Mutex<Timeline>,
    /// A closed swarm's key and tracker token (`None`: plain BitTorrent).
    pub swarm_key: Option<SwarmKey>,
    pub tracker_token: Option<String>,
    /// Some tracker answered an announce once.
    pub tracker_answered: AtomicBool,
    /// The last announce that failed, as its error says (a leaf lock): the
    /// watchdog names it when no tracker ever answered.
    pub tracker_error: Mutex<Option<String>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: Arc<Metainfo>,
        storage: Storage,
        have: Bitfield,
        dest: Option<PathBuf>,
        config: SessionConfig,
        seeding: bool,
        listen_port: u16,
        started: Instant,
    ) -> Result<(Arc<Context>, mpsc::UnboundedReceiver<Verdict>)> {
        let storage = Arc::new(storage);
        // As the picker will see it (pieces wholly in padding are had).
        let picker = Picker::new(storage.layout().clone(), have);
        let complete = picker.is_complete();
        // A download whose staging area was complete still needs placing.
        let initial = if complete && dest.is_none() {
            State::Complete
        } else {
            State::Downloading
        };
        let (verdict_tx, verdicts) = mpsc::unbounded_channel();
        let hasher = Hasher::start(storage.clone(), &meta, verdict_tx)
            .map_err(|e| Error::io("hasher thread", e))?;
        let steering = (seeding && config.steer)
            .then(|| Steering::new(picker.have().len(), storage.layout().piece_length()));
        let reused_bytes = if seeding { 0 } else { picker.have_bytes() };
        let peer_id = new_peer_id();
        let checked = (seeding && config.lazy_check).then(|| {
            (0..meta.piece_count().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        let now = Instant::now();
        let info_hash = meta.info_hash();
        let swarm_key = config.secret.as_ref().map(|s| s.swarm_key(&info_hash));
        let tracker_token = config.secret.as_ref().map(|s| s.tracker_token(&info_hash));
        let ctx = Context {
            swarm_key,
            tracker_token,
            tracker_answered: AtomicBool::new(false),
            tracker_error: Mutex::new(None),
            peer_id,
            pick_epoch: picker.epoch(),
            pieces: Mutex::new(picker),
            admission: Admission::new(peer_id, config.max_peers, config.peers.clone()),
            upload_limit: config.upload_limit.map(RateLimit::new),
            download_limit: config.download_limit.map(RateLimit::new),
            storage,
            dest,
            meta: meta.clone(),
            config,
            events: broadcast::channel(4096).0,
            state: watch::channel(initial).0,
            wake_dialer: Notify::new(),
            downloaded: AtomicU64::new(0),
            uploaded: AtomicU64::new(0),
            failed_pieces: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            seeds_connected: AtomicUsize::new(0),
            listen_port,
            reused_bytes,
            steering,
            hasher,
            seeding,
            serving_stopped: AtomicBool::new(false),
            checked,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            timeline: Mutex::new(Timeline {
                started: Some(started),
                serving: Some(now),
                verified: complete.then_some(now),
                placed: None,
                waited: std::time::Duration::ZERO,
            }),
        };
        Ok((Arc::new(ctx), verdicts))
    }

    /// The piece state (rule: the only way to it).
    pub fn pieces(&self) -> MutexGuard<'_, Picker> {
        self.pieces.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_complete(&self) -> bool {
        *self.state.borrow() == State::Complete
    }

    pub fn is_downloading(&self) -> bool {
        *self.state.borrow() == State::Downloading
    }

    /// Fails the session (rule W1: a disk fault ends the work that needs
    /// it, at once and named). The first failure wins; a seed whose data
    /// turns out bad fails; a complete download stays complete but stops
    /// serving (its peers get choked), said once in the log.
    pub fn fail(&self, error: &Error) {
        let seeding = self.seeding;
        let mut stop_serving = false;
        let failed = self.state.send_if_modified(|state| {
            if *state == State::Downloading || (seeding && *state == State::Complete) {
                *state = State::Failed(error.to_string());
                true
            } else {
                stop_serving = *state == State::Complete;
                false
            }
        });
        if failed {
            tracing::error!("{error}");
        } else if stop_serving && !self.serving_stopped.swap(true, Ordering::Relaxed) {
            tracing::warn!("{error}: serving stopped (the download was complete)");
        }
    }

    pub fn mark(&self, phase: impl FnOnce(&mut Timeline)) {
        phase(&mut self.timeline.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn phases(&self) -> Phases {
        let t = *self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        let secs = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
            (Some(a), None) => a.elapsed().as_secs_f64(),
            _ => 0.0,
        };
        Phases {
            check: secs(t.started, t.serving),
            swarm: if t.verified.is_some() || t.serving.is_some() {
                secs(t.serving, t.verified)
            } else {
                0.0
            },
            place: if t.verified.is_some() {
                secs(t.verified, t.placed)
            } else {
                0.0
            },
            wait: t.waited.as_secs_f64(),
        }
    }

    pub fn stats(&self) -> Stats {
        let (pieces_have, have_bytes, distributed, total_bytes) = {
            let pieces = self.pieces();
            (
                pieces.have().count(),
                pieces.have_bytes(),
                pieces.swarm_has_all(),
                pieces.layout().data_length(),
            )
        };
        Stats {
            downloaded: self.downloaded.load(Ordering::Relaxed),
            uploaded: self.uploaded.load(Ordering::Relaxed),
            have_bytes,
            reused_bytes: self.reused_bytes,
            total_bytes,
            pieces_have,
            piece_count: self.meta.piece_count(),
            peers: self.admission.connected(),
            complete: self.is_complete(),
            distributed,
            failed_pieces: self.failed_pieces.load(Ordering::Relaxed),
            banned_peers: self.admission.banned(),
            protocol_errors: self.protocol_errors.load(Ordering::Relaxed),
            phases: self.phases(),
        }
    }

    /// Whether piece `piece` may be served: checked against its hash from
    /// disk the first time (with a lazy check). A piece that no longer
    /// matches fails the seed: its data changed since the torrent was made.
    pub fn check_before_serving(&self, piece: u32) -> bool {
        let Some(checked) = &self.checked else {
            return true;
        };
        let (word, bit) = (piece as usize / 64, 1u64 << (piece % 64));
        let Some(slot) = checked.get(word) else {
            return false;
        };
        if slot.load(Ordering::Relaxed) & bit != 0 {
            return true;
        }
        match self.storage.hash_piece(piece) {
            Ok(hash) if Some(&hash) == self.meta.pieces.get(piece as usize) => {
                slot.fetch_or(bit, Ordering::Relaxed);
                true
            }
            Ok(_) => {
                self.fail(&Error::Failed(format!(
                    "{}: piece {piece} no longer matches the torrent: the data changed after the torrent was made",
                    self.meta.name
                )));
                false
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// Bytes still missing (what the tracker is told as `left`).
    pub fn left(&self) -> u64 {
        let pieces = self.pieces();
        pieces.layout().data_length() - pieces.have_bytes()
    }
}

fn new_peer_id() -> [u8; 20] {
    let mut id = *b"-MU0100-000000000000";
    let version = env!("CARGO_PKG_VERSION").replace('.', "");
    for (i, b) in version.as_bytes().iter().take(4).enumerate() {
        id[3 + i] = *b;
    }
    for b in &mut id[8..] {
        *b = fastrand::alphanumeric() as u8;
    }
    id
}
