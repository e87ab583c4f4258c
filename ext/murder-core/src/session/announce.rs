//! Announcing to the tracker: `started`, regular re-announces at the
//! tracker's interval (sooner while a download has few peers), `completed`
//! once, `stopped` on shutdown. A tracker that fails is asked again with a
//! backoff (2, 4, 8, then every 15 s): peers keep their connections and
//! the swarm goes on without it meanwhile.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use super::tracker_client::{local_address_towards, AnnounceEvent, AnnounceParams, Announcer};

pub(super) async fn run(ctx: Arc<Context>, url: String) {
    let announcer = Announcer::new(url, ctx.tasks.clone());
    // The route lookup may resolve a host name, which can take the
    // resolver's whole timeout: it must not hold up a shutdown.
    let ip = match ctx.config.announce_ip {
        Some(ip) => Some(ip),
        None => tokio::select! {
            _ = ctx.cancel.cancelled() => return,
            ip = local_address_towards(announcer.url()) => ip,
        },
    };
    let params = |event| AnnounceParams {
        info_hash: ctx.meta.info_hash(),
        peer_id: ctx.peer_id,
        port: ctx.listen_port,
        uploaded: ctx.uploaded.load(Ordering::Relaxed),
        downloaded: ctx.downloaded.load(Ordering::Relaxed),
        left: ctx.left(),
        event,
        ip,
        numwant: ctx.config.numwant,
        token: ctx.tracker_token.clone(),
    };
    // A change of state (complete, failed) is news for every tracker.
    let mut state = ctx.state.subscribe();
    let mut event = AnnounceEvent::Started;
    let mut completed_sent = ctx.is_complete();
    let mut failures = 0u32;
    loop {
        let request = params(event);
        let reply = tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            reply = announcer.announce(&request) => reply,
        };
        let mut wait = match reply {
            Ok(reply) => {
                failures = 0;
                ctx.tracker_answered.store(true, Ordering::Relaxed);
                tracing::debug!("announce {event:?}: {} peers", reply.peers.len());
                if event == AnnounceEvent::Completed {
                    completed_sent = true;
                }
                event = AnnounceEvent::Regular;
                ctx.admission.learn(reply.peers);
                ctx.wake_dialer.notify_one();
                ctx.config
                    .announce_interval
                    .or(reply.interval)
                    .unwrap_or(Duration::from_secs(15))
                    // Whatever a tracker says: one that asked for years
                    // would forget this peer long before it came back.
                    .clamp(Duration::from_secs(1), Duration::from_secs(600))
            }
            Err(e) => {
                tracing::warn!("{e}");
                *ctx.tracker_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                failures += 1;
                Duration::from_secs((1u64 << failures.min(4)).min(15))
            }
        };
        // A downloader with few peers asks again soon.
        if !ctx.is_complete() && ctx.admission.connected() < 4 {
            wait = wait.min(Duration::from_secs(2));
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = state.changed() => {}
        }
        if ctx.is_complete() && !completed_sent {
            event = AnnounceEvent::Completed;
        }
    }
    let stopped = params(AnnounceEvent::Stopped);
    let _ = tokio::time::timeout(Duration::from_secs(2), announcer.announce(&stopped)).await;
}
