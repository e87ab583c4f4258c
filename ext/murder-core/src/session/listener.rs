//! Connections that peers open to us.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::context::Context;
use super::{link, peer};
use crate::wire::{Handshake, WireError};

/// A peer must send its handshake within this time.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections still in their handshake (rule C3): at most `limit`; one
/// more ends the oldest. Anyone who can reach the port can open
/// connections that never handshake, each holding a descriptor for
/// `HANDSHAKE_TIMEOUT`: unbounded, they would take the descriptors the
/// data files need (and a file that cannot be opened fails the session,
/// rule W1). Ending the oldest rather than refusing the newest lets a
/// peer that handshakes at once through a flood of idle ones.
struct Handshaking {
    limit: usize,
    queue: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: std::sync::atomic::AtomicU64,
}

/// A connection's place among those handshaking, given up when dropped.
struct Place {
    of: Arc<Handshaking>,
    id: u64,
    ended: CancellationToken,
}

impl Handshaking {
    fn new(limit: usize) -> Self {
        Handshaking {
            limit,
            queue: Mutex::new(VecDeque::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The most handshakes at once for this process: an eighth of its
    /// descriptors, between 8 and 64.
    fn limit_for_this_process() -> usize {
        (crate::fsutil::descriptor_limit() / 8).clamp(8, 64)
    }

    /// Called as a connection is accepted, so that a flood is cut back
    /// before its tasks even run.
    fn enter(self: &Arc<Self>) -> Place {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ended = CancellationToken::new();
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while queue.len() >= self.limit {
            if let Some((_, oldest)) = queue.pop_front() {
                oldest.cancel();
            }
        }
        queue.push_back((id, ended.clone()));
        Place {
            of: self.clone(),
            id,
            ended,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut queue = self.of.queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.retain(|(id, _)| *id != self.id);
    }
}

pub(super) async fn run(ctx: Arc<Context>, listener: TcpListener) {
    let handshaking = Arc::new(Handshaking::new(Handshaking::limit_for_this_process()));
    loop {
        let accepted = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, remote)) = accepted else {
            // Out of descriptors and the like: back off, go on.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let place = handshaking.enter();
        let ctx = ctx.clone();
        ctx.tasks.clone().spawn(async move {
            peer::tune(&stream, &ctx);
            // A closed swarm's Noise handshake comes first: whoever lacks
            // the secret is dropped here, before they learn anything.
            let opened = async {
                let (mut reader, writer) =
                    link::open(stream, ctx.swarm_key.as_ref(), false).await?;
                let theirs = Handshake::read(&mut reader).await?;
                Ok::<_, WireError>((reader, writer, theirs))
            };
            let handshake = tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                _ = place.ended.cancelled() => return,
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, opened) => h,
            };
            drop(place);
            let Ok(Ok((mut reader, mut writer, theirs))) = handshake else {
                return;
            };
            if theirs.info_hash != ctx.meta.info_hash() {
                return;
            }
            let Some(key) = ctx.admission.admit(theirs.peer_id, None) else {
                return;
            };
            tracing::debug!("peer {remote} (incoming) connected");
            let ours = Handshake::new(ctx.meta.info_hash(), ctx.peer_id);
            if writer.handshake(&ours).await.is_ok() {
                let result = peer::run(ctx.clone(), &mut reader, &mut writer, key, theirs).await;
                tracing::debug!("peer {remote} (incoming) left: {result:?}");
            }
            ctx.admission.leave(key);
            ctx.wake_dialer.notify_one();
        });
    }
}
