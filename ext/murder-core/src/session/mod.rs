//! A torrent session: one torrent seeded or downloaded, its peers, its
//! tracker announces. Tuned for a datacenter like Murder tuned BitTornado:
//! no DHT, no UPnP, every interested peer unchoked, short timeouts.
//!
//! `STATE.md` beside this file is the map: the states of pieces and
//! blocks, who moves them, the rules, and the lock order. Each module owns
//! one concern: `admission` (who may connect, bans), `listener` and
//! `dialer` (connections in and out), `link` (a connection's two
//! directions, plain or sealed for a closed swarm), `announce` and
//! `tracker_client` (the trackers), `peer` (one connection), `rate` (upload
//! and download limits), `steering` (what a seed sends whom), `hasher` and
//! `verifier` (whether a piece is the torrent's), `completion` (placing the
//! data and finishing), `watchdog` (a swarm that cannot finish), `report`
//! (what front ends print), `config` and `context` (settings, validated
//! once, and the state every task shares), `runner` (a session on a thread
//! of its own, for callers without a runtime). Every task is spawned on the session's tracker
//! and ends when its cancellation token fires: `Session::shutdown` returns
//! only after all of them did.

mod admission;
mod announce;
mod completion;
mod config;
mod context;
mod dialer;
mod hasher;
mod link;
mod listener;
mod peer;
mod rate;
mod report;
mod runner;
mod steering;
mod tracker_client;
mod verifier;
mod watchdog;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::{SessionConfig, DEFAULT_MAX_PEERS, MAX_PEERS_LIMIT};
pub use report::{Phases, Report, Reporter};
pub use runner::SessionRunner;
pub use tracker_client::{local_address_towards, AnnounceEvent};

use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::progress::Progress;
use crate::storage::{tree_difference, verified_pieces, Storage};
use context::Context;

/// How long shutdown waits for the session's tasks before giving up on
/// them (each ends at once on cancellation; the longest wait is the
/// `stopped` announce, bounded at 2 s).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Payload bytes received from peers (duplicates and failures included).
    pub downloaded: u64,
    /// Payload bytes sent to peers.
    pub uploaded: u64,
    /// Bytes of verified pieces held (trailing padding, which is on no
    /// disk, left out; so in `total_bytes`).
    pub have_bytes: u64,
    /// Bytes that were on this host before the download (resumed or reused).
    pub reused_bytes: u64,
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
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Seconds spent checking data before serving, in the swarm, and
    /// placing the data at its destination.
    pub phases: Phases,
}

/// Reads a session's stats (see `Session::stats_handle`).
#[derive(Clone)]
pub struct StatsHandle(Arc<Context>);

impl StatsHandle {
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }
}

/// A running session. Dropping it without `shutdown` cancels its tasks.
pub struct Session {
    ctx: Arc<Context>,
    local_addr: SocketAddr,
}

impl Session {
    /// Checks the data (seeding) or the staging area (download: verified
    /// pieces from an earlier run are kept), starts listening, announcing
    /// and connecting.
    pub async fn start(meta: Arc<Metainfo>, role: Role, config: SessionConfig) -> Result<Session> {
        Session::start_with(meta, role, config, Arc::new(Progress::new())).await
    }

    /// `start`, with `progress` to follow (and cancel) the check of the
    /// data that comes first.
    pub async fn start_with(
        meta: Arc<Metainfo>,
        role: Role,
        config: SessionConfig,
        progress: Arc<Progress>,
    ) -> Result<Session> {
        config.validate()?;
        let started = Instant::now();
        let (storage, have, dest) = {
            let meta = meta.clone();
            let role = role.clone();
            let reserve = config.preallocate;
            let reuse = config.reuse.clone();
            let lazy = config.lazy_check;
            tokio::task::spawn_blocking(move || {
                prepare(meta, role, &progress, reserve, &reuse, lazy)
            })
            .await
            .map_err(|e| Error::Internal(e.to_string()))??
        };
        let listener = TcpListener::from_std(crate::listen::tcp(config.listen)?)
            .map_err(|e| Error::io(config.listen.to_string(), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io(config.listen.to_string(), e))?;
        let seeding = matches!(role, Role::Seed { .. });
        let (ctx, verdicts) = Context::new(
            meta,
            storage,
            have,
            dest,
            config,
            seeding,
            local_addr.port(),
            started,
        )?;
        let complete = ctx.pieces().is_complete();
        ctx.tasks.spawn(verifier::run(ctx.clone(), verdicts));
        if complete && ctx.dest.is_some() {
            // A staging area that was complete still needs its placing.
            ctx.tasks.spawn(completion::finish(ctx.clone()));
        }
        ctx.tasks.spawn(listener::run(ctx.clone(), listener));
        ctx.tasks.spawn(dialer::run(ctx.clone()));
        if !complete {
            ctx.tasks.spawn(watchdog::run(ctx.clone()));
        }
        if ctx.config.use_tracker {
            // Every tracker of the torrent (BEP 12), or those the caller
            // named in their place, each on its own schedule; their peers
            // merge in admission.
            let trackers = if ctx.config.announce_to.is_empty() {
                ctx.meta.trackers()
            } else {
                // Each was checked by `validate`.
                ctx.config
                    .announce_to
                    .iter()
                    .filter_map(|t| crate::create::announce_url(t).ok())
                    .collect()
            };
            for url in trackers {
                ctx.tasks.spawn(announce::run(ctx.clone(), url));
            }
        }
        Ok(Session { ctx, local_addr })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Stats {
        self.ctx.stats()
    }

    /// A handle that reads this session's stats from anywhere (a metrics
    /// endpoint), for as long as it lives.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.ctx.clone())
    }

    pub fn state(&self) -> watch::Receiver<State> {
        self.ctx.state.subscribe()
    }

    /// Resolves when the download is complete (at once for a seed).
    pub async fn wait_complete(&self) -> Result<()> {
        completion(self.state()).await
    }

    /// Whether a download found its destination holding the torrent's
    /// complete data already: nothing was staged, and there is nothing to
    /// place (the session seeds it from there).
    pub fn found_in_place(&self) -> bool {
        !self.ctx.seeding && self.ctx.dest.is_none()
    }

    /// Renames a download that was only staged (`SessionConfig::place`
    /// false) to its destination, once it is complete.
    pub async fn place(&self) -> Result<PathBuf> {
        let Some(dest) = self.ctx.dest.clone() else {
            return Err(Error::InvalidArgument("a seed has nothing to place".into()));
        };
        if !self.ctx.is_complete() {
            return Err(Error::InvalidArgument(format!(
                "{}: not complete, nothing to place",
                dest.display()
            )));
        }
        let storage = self.ctx.storage.clone();
        let target = dest.clone();
        let started = Instant::now();
        // From staged to now: the wait for the order, not work of ours.
        self.ctx.mark(|t| {
            if let Some(staged) = t.placed {
                t.waited = started.saturating_duration_since(staged);
            }
        });
        self.ctx
            .tasks
            .spawn_blocking(move || storage.rename_to(&target))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.ctx.mark(|t| {
            t.placed = Some(t.placed.map_or(Instant::now(), |p| p + started.elapsed()));
        });
        Ok(dest)
    }

    /// Announces `stopped`, closes every connection, and returns once every
    /// task of the session has ended (no verification, no rename after
    /// this returns: rule S1 of STATE.md).
    pub async fn shutdown(self) {
        self.ctx.cancel.cancel();
        self.ctx.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.ctx.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("session tasks did not end within {SHUTDOWN_GRACE:?}");
        }
        let ctx = self.ctx.clone();
        let _ = tokio::task::spawn_blocking(move || ctx.hasher.stop()).await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ctx.cancel.cancel();
    }
}

/// The storage of a session and the pieces it holds already.
fn prepare(
    meta: Arc<Metainfo>,
    role: Role,
    progress: &Progress,
    reserve: bool,
    reuse: &crate::reuse::ReuseConfig,
    lazy_check: bool,
) -> Result<(Storage, crate::bitfield::Bitfield, Option<PathBuf>)> {
    match role {
        Role::Seed { data } if lazy_check => {
            // Checked piece by piece as it is first sent (`Context::checked`).
            if !data.exists() {
                return Err(Error::io(&data, std::io::ErrorKind::NotFound.into()));
            }
            let have = crate::bitfield::Bitfield::full(meta.piece_count());
            Ok((Storage::for_seeding(meta, &data), have, None))
        }
        Role::Seed { data } => {
            let have = verified_pieces(&meta, &data, progress)?;
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
                let have = verified_pieces(&meta, &dest, progress)?;
                if have.is_complete() {
                    // Its data alone does not make it the release (rule R3).
                    if let Some(difference) = tree_difference(&meta, &dest)? {
                        return Err(Error::InvalidArgument(format!(
                            "{}: already exists with this torrent's data, but {difference}; remove it first",
                            dest.display()
                        )));
                    }
                    return Ok((Storage::for_seeding(meta, &dest), have, None));
                }
                return Err(Error::InvalidArgument(format!(
                    "{}: already exists and is not this torrent's data; remove it first",
                    dest.display()
                )));
            }
            let (storage, have, reused) =
                Storage::for_download(meta, &dest, progress, reserve, reuse)?;
            tracing::debug!(
                "reused {} bytes: {} files linked, {} copied, {} earlier files read",
                reused.bytes,
                reused.linked.len(),
                reused.files_copied,
                reused.files_read
            );
            Ok((storage, have, Some(dest)))
        }
    }
}

/// Resolves with the reason once the session behind `state` fails: a
/// seed's data that no longer matches or cannot be read, a disk error.
/// Never resolves for a session that does not fail (its owner then ends
/// it some other way), nor after the session is gone.
pub async fn failure(mut state: watch::Receiver<State>) -> String {
    loop {
        if let State::Failed(reason) = &*state.borrow_and_update() {
            return reason.clone();
        }
        if state.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Resolves when the session behind `state` completes, or fails.
pub async fn completion(mut state: watch::Receiver<State>) -> Result<()> {
    loop {
        match &*state.borrow_and_update() {
            State::Complete => return Ok(()),
            State::Failed(reason) => return Err(Error::Failed(reason.clone())),
            State::Downloading => {}
        }
        if state.changed().await.is_err() {
            return Err(Error::Internal("session ended".into()));
        }
    }
}
