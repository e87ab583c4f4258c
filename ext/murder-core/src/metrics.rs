//! Metrics in the OpenMetrics text format that Prometheus scrapes: the
//! tracker's at its `/metrics`, a session's at `murder seed|peer --metrics
//! ADDR`. Each scrape encodes the current counters afresh
//! (prometheus-client does the format).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::session::Stats;
use crate::tracker::Tracker;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TorrentLabels {
    info_hash: String,
    name: String,
}

/// A label value as the text format writes it: prometheus-client writes
/// values as they are, so a torrent named with a quote or a line break
/// would end the label, or the line, and forge or break the scrape.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn counter(value: u64) -> Counter<u64, AtomicU64> {
    let c = Counter::<u64, AtomicU64>::default();
    c.inc_by(value);
    c
}

/// A count as a gauge's value: one past i64 (a peer may announce any
/// `left`, saturated at u64::MAX) is shown as i64::MAX, not wrapped negative.
fn clamped(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge(value: i64) -> Gauge<i64, AtomicI64> {
    let g = Gauge::<i64, AtomicI64>::default();
    g.set(value);
    g
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, registry);
    out
}

/// The tracker's metrics: announces, failures and scrapes, and for each
/// torrent its peers, seeds, bytes left in the swarm and completions.
pub fn tracker(tracker: &Tracker, viewer: crate::tracker::Viewer) -> String {
    let mut registry = Registry::with_prefix("murder_tracker");
    let counters = tracker.counters();
    registry.register(
        "announces",
        "Announces received",
        counter(counters.announces.load(Relaxed)),
    );
    registry.register(
        "announce_failures",
        "Announces answered with a failure reason",
        counter(counters.announce_failures.load(Relaxed)),
    );
    registry.register(
        "scrapes",
        "Scrapes received",
        counter(counters.scrapes.load(Relaxed)),
    );
    let peers = Family::<TorrentLabels, Gauge<i64, AtomicI64>>::default();
    let seeds = Family::<TorrentLabels, Gauge<i64, AtomicI64>>::default();
    let left = Family::<TorrentLabels, Gauge<i64, AtomicI64>>::default();
    let completed = Family::<TorrentLabels, Counter<u64, AtomicU64>>::default();
    let stats = tracker.stats_for(viewer);
    for t in &stats.torrents {
        let labels = TorrentLabels {
            info_hash: t.info_hash.clone(),
            name: label_value(&t.name),
        };
        peers.get_or_create(&labels).set(t.peers.len() as i64);
        seeds.get_or_create(&labels).set(t.seeds as i64);
        left.get_or_create(&labels).set(clamped(t.bytes_left));
        completed.get_or_create(&labels).inc_by(t.completed);
    }
    registry.register("peers", "Peers in the swarm", peers);
    registry.register("seeds", "Peers that hold every piece", seeds);
    registry.register(
        "left_bytes",
        "Bytes still missing, summed over the peers",
        left,
    );
    registry.register("completions", "Downloads completed", completed);
    registry.register(
        "torrents",
        "Torrents allowed",
        gauge(stats.torrents.len() as i64),
    );
    text(&registry)
}

/// A session's metrics (`role`: "seed" or "download").
pub fn session(stats: &Stats, role: &str) -> String {
    let mut registry = Registry::with_prefix("murder_peer");
    let r = registry.sub_registry_with_label(("role".into(), role.to_string().into()));
    r.register(
        "downloaded_bytes",
        "Payload bytes received from peers",
        counter(stats.downloaded),
    );
    r.register(
        "uploaded_bytes",
        "Payload bytes sent to peers",
        counter(stats.uploaded),
    );
    r.register(
        "verified_bytes",
        "Bytes of verified pieces held",
        gauge(clamped(stats.have_bytes)),
    );
    r.register(
        "reused_bytes",
        "Bytes that were on this host before",
        gauge(clamped(stats.reused_bytes)),
    );
    r.register(
        "size_bytes",
        "Bytes of the release",
        gauge(clamped(stats.total_bytes)),
    );
    r.register("peers", "Connected peers", gauge(stats.peers as i64));
    r.register(
        "failed_pieces",
        "Pieces that failed their hash check",
        counter(stats.failed_pieces),
    );
    r.register(
        "banned_peers",
        "Peers banned for sending bad data",
        gauge(stats.banned_peers as i64),
    );
    r.register(
        "protocol_errors",
        "Connections closed because the peer broke the protocol",
        counter(stats.protocol_errors),
    );
    r.register(
        "complete",
        "1 once every piece is verified",
        gauge(stats.complete as i64),
    );
    text(&registry)
}

/// Serves `render()` at `GET /metrics` on `addr` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Send + Sync + Clone + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors and the like: back off, never spin.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let mut response = if req.uri().path() == "/metrics" {
                        let mut r = hyper::Response::new(Full::new(Bytes::from(render())));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        r
                    } else {
                        hyper::Response::new(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                http1::Builder::new().serve_connection(TokioIo::new(stream), service),
            )
            .await;
        });
    }
}

/// Binds `addr` for `serve` (a taken port fails here, in the foreground).
pub async fn bind(addr: SocketAddr) -> crate::Result<tokio::net::TcpListener> {
    crate::listen::bind(addr)
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|e| crate::Error::io(format!("metrics {addr}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;
    use crate::tracker::{TrackerConfig, Viewer};

    /// A torrent's name reaches `/metrics` as one escaped label value: a
    /// name holding a quote and a line break forged a metric line.
    #[test]
    fn a_torrent_name_cannot_forge_a_metric() {
        let name = "a\"} 1\nforged_metric 9";
        let bytes = format!(
            "d4:infod6:lengthi1e4:name{}:{name}12:piece lengthi16384e6:pieces20:xxxxxxxxxxxxxxxxxxxxee",
            name.len()
        );
        let meta = Metainfo::from_bytes(bytes.as_bytes()).expect("a valid torrent");
        let tracker = Tracker::new(TrackerConfig::default()).expect("tracker");
        tracker.allow_torrent(&meta);
        let text = super::tracker(&tracker, Viewer::Operator);
        assert!(
            !text.lines().any(|l| l.starts_with("forged_metric")),
            "{text}"
        );
        assert!(text.contains(r#"name="a\"} 1\nforged_metric 9""#), "{text}");
    }
}
