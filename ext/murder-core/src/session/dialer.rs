//! Connections we open to peers the tracker (or the caller) named.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::context::Context;
use super::listener::HANDSHAKE_TIMEOUT;
use super::{link, peer};
use crate::wire::{Handshake, WireError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long before dialling an address again after its connection ended.
const REDIAL: Duration = Duration::from_secs(2);
/// The same for a finished session: whoever it lost is most likely a seed
/// too, and downloaders dial seeds themselves.
const SEED_REDIAL: Duration = Duration::from_secs(30);

pub(super) async fn run(ctx: Arc<Context>) {
    loop {
        for addr in ctx.admission.to_dial() {
            let ctx = ctx.clone();
            ctx.tasks.clone().spawn(async move {
                let result = tokio::select! {
                    _ = ctx.cancel.cancelled() => Err("shutting down".to_string()),
                    r = connect(ctx.clone(), addr) => r,
                };
                tracing::debug!("peer {addr} left: {result:?}");
                let pause = if ctx.is_complete() {
                    SEED_REDIAL
                } else {
                    REDIAL
                };
                ctx.admission.dial_ended(addr, pause);
                ctx.wake_dialer.notify_one();
            });
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = ctx.wake_dialer.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn connect(ctx: Arc<Context>, addr: SocketAddr) -> Result<(), String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    peer::tune(&stream, &ctx);
    let ours = Handshake::new(ctx.meta.info_hash(), ctx.peer_id);
    let (mut reader, mut writer, theirs) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (mut reader, mut writer) = link::open(stream, ctx.swarm_key.as_ref(), true).await?;
        writer.handshake(&ours).await?;
        let theirs = Handshake::read(&mut reader).await?;
        Ok::<_, WireError>((reader, writer, theirs))
    })
    .await
    .map_err(|_| "handshake timed out".to_string())?
    .map_err(|e| e.to_string())?;
    if theirs.info_hash != ctx.meta.info_hash() {
        ctx.admission.ban_address(addr);
        return Err("different torrent".into());
    }
    if theirs.peer_id == ctx.peer_id {
        ctx.admission.ban_address(addr); // ourselves
        return Err("connected to ourselves".into());
    }
    let Some(key) = ctx.admission.admit(theirs.peer_id, Some(addr)) else {
        return Err("not admitted".into());
    };
    let result = peer::run(ctx.clone(), &mut reader, &mut writer, key, theirs).await;
    if ctx.admission.is_banned(key) {
        ctx.admission.ban_address(addr);
    }
    ctx.admission.leave(key);
    result.map_err(|e| e.to_string())
}
