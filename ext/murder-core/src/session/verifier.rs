//! The async side of verification: applies the hasher thread's verdicts to
//! the piece state (rule P3 of STATE.md: only a verdict sets `have`), blames
//! the peers that sent bad bytes, tells every connection, and starts the
//! completion when the last piece passes. One task, on the session's
//! tracker: no verdict is applied, and nothing is renamed, after shutdown.
//!
//! Connections hear of new pieces at most once per `HAVE_BATCH` (rule H1
//! of STATE.md): a tree's one-block pieces pass a thousand times a second,
//! and telling 15 connections of each one cost more CPU than moving the
//! bytes (each wakes, sends a 9-byte `have`, and its peer wakes to read it).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use super::completion;
use super::context::{Context, Event};
use super::hasher::Verdict;
use crate::error::Error;

/// Longest a verified piece waits before connections hear of it.
pub(crate) const HAVE_BATCH: Duration = Duration::from_millis(20);

pub(super) async fn run(ctx: Arc<Context>, mut verdicts: UnboundedReceiver<Verdict>) {
    let mut told_at = Instant::now() - HAVE_BATCH;
    let mut untold = false;
    let tell = |told_at: &mut Instant, untold: &mut bool| {
        let _ = ctx.events.send(Event::Have);
        *told_at = Instant::now();
        *untold = false;
    };
    loop {
        let verdict = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            v = verdicts.recv() => match v {
                Some(v) => v,
                None => break,
            },
            _ = tokio::time::sleep_until(told_at + HAVE_BATCH), if untold => {
                tell(&mut told_at, &mut untold);
                continue;
            }
        };
        if let Some(e) = verdict.error {
            ctx.fail(&e);
            continue;
        }
        let piece = verdict.job.piece;
        if verdict.ok && verdict.job.pad_dirty {
            // The torrent's own hashes need data where a pad file lies.
            ctx.fail(&Error::InvalidArgument(format!(
                "{}: piece {piece} needs bytes other than zeros in a pad file (BEP 47 pads are zeros): refusing the torrent",
                ctx.meta.name
            )));
            continue;
        }
        let (blame, complete) = {
            let mut pieces = ctx.pieces();
            let blame = pieces.verdict(piece, verdict.ok, &verdict.block_hashes);
            (blame, pieces.is_complete())
        };
        for key in &blame.ban {
            ctx.admission.ban(*key);
        }
        if let Some(key) = blame.strike {
            ctx.admission.strike(key);
        }
        if !verdict.ok {
            ctx.failed_pieces.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("piece {piece} failed its hash check; fetching it again");
        }
        // Peers announce new pieces, and banned peers leave, on this event:
        // at once for a ban, a failure or the last piece, else batched.
        untold = true;
        if !verdict.ok
            || !blame.ban.is_empty()
            || complete
            || Instant::now() >= told_at + HAVE_BATCH
        {
            tell(&mut told_at, &mut untold);
        }
        if verdict.ok && complete && ctx.dest.is_some() {
            completion::finish(ctx.clone()).await;
        } else if verdict.ok && complete {
            ctx.mark(|t| t.verified = Some(std::time::Instant::now()));
        }
    }
}
