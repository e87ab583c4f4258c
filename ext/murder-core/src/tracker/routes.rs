//! The tracker's routes: announce (the hot path), scrape, the status page,
//! `/stats.json`, `/health` and `/metrics`. Every failure of a BitTorrent
//! request is answered with a bencoded `failure reason`.

use std::net::{IpAddr, SocketAddr};

use bendy::encoding::Encoder;

use super::framing::{Head, Method, Reply, Status};
use super::request::{parse_announce, parse_scrape, query_token, RequestError};
use super::{page, Tracker, Viewer};

/// Longest request target accepted; a real announce is about 300 bytes.
const MAX_URI: usize = 4096;

pub(super) fn route(tracker: &Tracker, head: &Head<'_>, remote: SocketAddr) -> Reply {
    if head.method == Method::Other {
        return plain(Status::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let too_long = head.target_len > MAX_URI;
    let query = head.query;
    if head.path == "/announce" {
        // The hot path: its token is one of its fields.
        return bencoded(if too_long {
            failure("request URI too long")
        } else {
            announce(tracker, query, remote.ip().to_canonical())
        });
    }
    let token = query_token(query);
    let viewer = tracker.viewer(token.as_deref());
    match head.path {
        "/scrape" if too_long => bencoded(failure("request URI too long")),
        "/scrape" => bencoded(scrape(tracker, query, viewer)),
        "/" => with_type(
            Status::OK,
            "text/html; charset=utf-8",
            page::render(tracker.config()).into_bytes(),
        ),
        "/stats.json" => match serde_json::to_vec(&tracker.stats_for(viewer)) {
            Ok(json) => with_type(Status::OK, "application/json", json),
            Err(e) => plain(Status::INTERNAL, &format!("{e}\n")),
        },
        "/health" => plain(Status::OK, "ok\n"),
        "/metrics" => with_type(
            Status::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::tracker(tracker, viewer).into_bytes(),
        ),
        _ => plain(Status::NOT_FOUND, "not found\n"),
    }
}

fn announce(tracker: &Tracker, query: &[u8], from: IpAddr) -> Vec<u8> {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = tracker.counters();
    counters.announces.fetch_add(1, Relaxed);
    let request = match parse_announce(query) {
        Ok(r) => r,
        Err(RequestError(reason)) => {
            counters.announce_failures.fetch_add(1, Relaxed);
            return failure(&reason);
        }
    };
    let config = tracker.config();
    let numwant = request
        .numwant
        .unwrap_or(config.default_numwant)
        .min(config.max_numwant);
    let now = tokio::time::Instant::now().into_std();
    let Some(reply) = tracker.registry().announce(&request, from, numwant, now) else {
        counters.announce_failures.fetch_add(1, Relaxed);
        return failure("torrent not allowed on this tracker");
    };
    let interval = config.interval.as_secs().max(1);
    let encoded = encode(|e| {
        e.emit_dict(|mut d| {
            d.emit_pair(b"complete", reply.complete)?;
            d.emit_pair(b"incomplete", reply.incomplete)?;
            d.emit_pair(b"interval", interval)?;
            d.emit_pair(b"min interval", interval.div_ceil(2))?;
            if request.compact {
                let (mut v4, mut v6) = (Vec::new(), Vec::new());
                for (_, addr) in &reply.peers {
                    match addr.ip() {
                        IpAddr::V4(ip) => v4.extend_from_slice(&ip.octets()),
                        IpAddr::V6(ip) => v6.extend_from_slice(&ip.octets()),
                    }
                    let port = addr.port().to_be_bytes();
                    if addr.is_ipv4() {
                        v4.extend_from_slice(&port)
                    } else {
                        v6.extend_from_slice(&port)
                    }
                }
                d.emit_pair_with(b"peers", |e| e.emit_bytes(&v4))?;
                if !v6.is_empty() {
                    d.emit_pair_with(b"peers6", |e| e.emit_bytes(&v6))?;
                }
            } else {
                d.emit_pair_with(b"peers", |e| {
                    e.emit_list(|list| {
                        for (id, addr) in &reply.peers {
                            list.emit_dict(|mut p| {
                                p.emit_pair(b"ip", addr.ip().to_string())?;
                                if !request.no_peer_id {
                                    p.emit_pair_with(b"peer id", |e| e.emit_bytes(id))?;
                                }
                                p.emit_pair(b"port", addr.port())
                            })?;
                        }
                        Ok(())
                    })
                })?;
            }
            Ok(())
        })
    });
    encoded.unwrap_or_else(|| failure("internal error encoding the reply"))
}

fn scrape(tracker: &Tracker, query: &[u8], viewer: Viewer) -> Vec<u8> {
    tracker
        .counters()
        .scrapes
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut hashes = match parse_scrape(query) {
        Ok(h) => h,
        Err(RequestError(reason)) => return failure(&reason),
    };
    let registry = tracker.registry();
    if hashes.is_empty() {
        hashes = registry.hashes(viewer);
    }
    hashes.sort();
    hashes.dedup();
    let counts: Vec<_> = hashes
        .iter()
        .filter_map(|h| registry.scrape(h, viewer).map(|c| (h, c)))
        .collect();
    drop(registry);
    let encoded = encode(|e| {
        e.emit_dict(|mut d| {
            d.emit_pair_with(b"files", |e| {
                e.emit_dict(|mut files| {
                    for (hash, c) in &counts {
                        files.emit_pair_with(hash.as_slice(), |e| {
                            e.emit_dict(|mut f| {
                                f.emit_pair(b"complete", c.complete)?;
                                f.emit_pair(b"downloaded", c.downloaded)?;
                                f.emit_pair(b"incomplete", c.incomplete)
                            })
                        })?;
                    }
                    Ok(())
                })
            })
        })
    });
    encoded.unwrap_or_else(|| failure("internal error encoding the reply"))
}

fn encode(
    build: impl FnOnce(&mut Encoder) -> Result<(), bendy::encoding::Error>,
) -> Option<Vec<u8>> {
    let mut encoder = Encoder::new();
    build(&mut encoder).ok()?;
    encoder.get_output().ok()
}

pub(super) fn failure(reason: &str) -> Vec<u8> {
    let mut out = format!("d14:failure reason{}:", reason.len()).into_bytes();
    out.extend_from_slice(reason.as_bytes());
    out.push(b'e');
    out
}

fn bencoded(body: Vec<u8>) -> Reply {
    with_type(Status::OK, "text/plain", body)
}

fn plain(status: Status, text: &str) -> Reply {
    with_type(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
    )
}

fn with_type(status: Status, content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        status,
        content_type,
        body,
    }
}
