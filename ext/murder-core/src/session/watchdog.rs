//! A download that cannot finish says so: when, for the session's orphan
//! timeout, nothing was verified, some piece we lack is held by no
//! connected peer, and no connected peer is a seed, the seeder left before
//! the swarm had every piece. The session fails, naming how many pieces.
//! Received bytes count as progress: a steering seed never looks like a
//! seed, and one piece may take longer than the timeout on a slow link.
//! (Only once some peer was ever connected: before that, the seeder may
//! simply not have started yet.) And a download that received nothing at
//! all for the stall timeout fails too: no host of a deploy waits forever.
//! Sooner, on the tracker timeout, when no tracker ever answered and no
//! peer was ever connected: such a host cannot learn of any peer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::context::Context;
use crate::error::Error;

pub(super) async fn run(ctx: Arc<Context>) {
    let mut last_have = ctx.pieces().have().count();
    let mut progress_at = Instant::now();
    let mut last_received = ctx.downloaded.load(Ordering::Relaxed);
    let mut received_at = Instant::now();
    let since = Instant::now();
    // Looks often enough to honour the orphan timeout (tests set it short).
    let every =
        (ctx.config.orphan_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !ctx.is_downloading() {
            return;
        }
        let (have, orphans, verified) = {
            let pieces = ctx.pieces();
            (
                pieces.have().count(),
                pieces.orphans(),
                pieces.is_complete(),
            )
        };
        // Every piece verified: completion owns the rest, and its final
        // sync (a whole file system's, for a large tree) receives nothing
        // and may outlast the stall timeout.
        if verified {
            return;
        }
        let received = ctx.downloaded.load(Ordering::Relaxed);
        if received != last_received {
            last_received = received;
            received_at = Instant::now();
        } else if received_at.elapsed() >= ctx.config.stall_timeout {
            // The timeout, not the time measured: a tick late under load
            // would otherwise name a limit nobody set.
            ctx.fail(&Error::Failed(format!(
                "{}: nothing received for {} s ({} peers connected){}",
                ctx.meta.name,
                ctx.config.stall_timeout.as_secs(),
                ctx.admission.connected(),
                tracker_silence(&ctx)
            )));
            return;
        }
        if received == 0
            && since.elapsed() >= ctx.config.tracker_timeout
            && ctx.config.use_tracker
            && !ctx.tracker_answered.load(Ordering::Relaxed)
            && !ctx.admission.ever_admitted()
        {
            let error = last_tracker_error(&ctx)
                .unwrap_or_else(|| "its announce is still unanswered".into());
            ctx.fail(&Error::Failed(format!(
                "{}: no tracker answered in {} s and no peer connected: {error}",
                ctx.meta.name,
                ctx.config.tracker_timeout.as_secs()
            )));
            return;
        }
        // Bytes still arriving are progress too: a steering seed shows a
        // peer only the pieces it offers (so it never counts as a seed),
        // and on a slow link one piece outlasts the orphan timeout.
        if have != last_have || received_at > progress_at {
            last_have = have;
            progress_at = Instant::now();
            continue;
        }
        let stuck = progress_at.elapsed() >= ctx.config.orphan_timeout;
        let seeds = ctx.seeds_connected.load(Ordering::Relaxed);
        if stuck && orphans > 0 && seeds == 0 && ctx.admission.ever_admitted() {
            ctx.fail(&Error::Failed(format!(
                "{}: {orphans} of {} pieces are held by no connected peer and no seed is connected \
                 (the seeder left before the swarm had every piece); nothing new for {:.1} s",
                ctx.meta.name,
                ctx.meta.piece_count(),
                progress_at.elapsed().as_secs_f64()
            )));
            return;
        }
    }
}

/// Why no peer may be known: every announce so far failed. A host that
/// cannot reach the tracker (a firewall, the wrong address for it) learns
/// of no peer, and the stall is the tracker's.
fn tracker_silence(ctx: &Context) -> String {
    if ctx.tracker_answered.load(Ordering::Relaxed) {
        return String::new();
    }
    match last_tracker_error(ctx) {
        Some(error) => format!("; no tracker answered: {error}"),
        None => String::new(),
    }
}

/// The last announce's error, if it failed (a leaf lock: STATE.md).
fn last_tracker_error(ctx: &Context) -> Option<String> {
    ctx.tracker_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}
