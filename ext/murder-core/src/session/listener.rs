//! Connections that peers open to us.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::context::Context;
use super::peer;
use crate::wire::{write_handshake, Handshake};

/// A peer must send its handshake within this time.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn run(ctx: Arc<Context>, listener: TcpListener) {
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
        let ctx = ctx.clone();
        ctx.tasks.clone().spawn(async move {
            peer::tune(&stream, &ctx);
            let mut stream = stream;
            let handshake = tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, Handshake::read(&mut stream)) => h,
            };
            let Ok(Ok(theirs)) = handshake else {
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
            if write_handshake(&mut stream, &ours).await.is_ok() {
                let result = peer::run(ctx.clone(), stream, key, theirs).await;
                tracing::debug!("peer {remote} (incoming) left: {result:?}");
            }
            ctx.admission.leave(key);
            ctx.wake_dialer.notify_one();
        });
    }
}
