//! The tracker's HTTP side, on hyper: a bounded accept loop, timeouts that
//! shed slow clients, and the routes. Every failure of a request is answered
//! (a bencoded `failure reason` for BitTorrent clients) or closes only that
//! connection.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bendy::encoding::Encoder;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::request::{parse_announce, parse_scrape, query_token, RequestError};
use super::{page, Tracker, Viewer};

/// A client must send its request head within this time (slow-loris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer than this, however it behaves.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Longest request URI accepted; a real announce is about 300 bytes.
const MAX_URI: usize = 4096;
/// Largest request head hyper buffers.
const MAX_HEAD: usize = 16 * 1024;

type Body = Full<Bytes>;

/// A connection whose end is its close: hyper's graceful `shutdown` before
/// dropping the socket is a syscall per connection that the close (FIN on
/// drop) makes redundant. Measured with bench/tracker.
struct CloseOnDrop(tokio::net::TcpStream);

impl tokio::io::AsyncRead for CloseOnDrop {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CloseOnDrop {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

pub async fn serve(
    listener: TcpListener,
    tracker: Tracker,
    shutdown: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let limit = Arc::new(Semaphore::new(tracker.config().max_connections.max(1)));
    let (close_tx, close_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // At the limit, stop accepting: new clients wait in the backlog.
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!("tracker accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let tracker = tracker.clone();
        let mut close = close_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            // No TCP_NODELAY: hyper writes a reply in one writev, which
            // Nagle never holds back (one syscall less per connection).
            let service = service_fn(move |req| {
                let response = route(&tracker, &req, remote);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(CloseOnDrop(stream)), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                _ = close.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                }
            }
        });
    }
    drop(listener); // the port is free from here on
    drop(close_tx);
    let drained = tokio::time::timeout(Duration::from_secs(2), async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.abort_all();
    }
    Ok(())
}

fn route(tracker: &Tracker, req: &Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("").as_bytes();
    let too_long = req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    if path == "/announce" {
        // The hot path: its token is one of its fields.
        return bencoded(if too_long {
            failure("request URI too long")
        } else {
            announce(tracker, query, remote.ip().to_canonical())
        });
    }
    let token = query_token(query);
    let viewer = tracker.viewer(token.as_deref());
    match path {
        "/scrape" if too_long => bencoded(failure("request URI too long")),
        "/scrape" => bencoded(scrape(tracker, query, viewer)),
        "/" => {
            let html = page::render(tracker.config());
            with_type(
                StatusCode::OK,
                "text/html; charset=utf-8",
                html.into_bytes(),
            )
        }
        "/stats.json" => match serde_json::to_vec(&tracker.stats_for(viewer)) {
            Ok(json) => with_type(StatusCode::OK, "application/json", json),
            Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
        },
        "/health" => plain(StatusCode::OK, "ok\n"),
        "/metrics" => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::tracker(tracker, viewer).into_bytes(),
        ),
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
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

fn bencoded(body: Vec<u8>) -> Response<Body> {
    with_type(StatusCode::OK, "text/plain", body)
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    with_type(
        status,
        "text/plain; charset=utf-8",
        text.as_bytes().to_vec(),
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
