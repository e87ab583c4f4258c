//! Connections that peers open to us.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::context::Context;
use super::{link, peer};
use crate::wire::{Handshake, WireError};

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
                h = tokio::time::timeout(HANDSHAKE_TIMEOUT, opened) => h,
            };
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
