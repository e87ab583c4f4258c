//! The tracker client: HTTP announces (BEP 3, compact BEP 23, BEP 7 peers6)
//! through hyper, with Murder's short timeouts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::time::Duration;
use tokio_util::task::TaskTracker;

use bendy::decoding::{Decoder, Object};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use percent_encoding::{percent_encode, NON_ALPHANUMERIC};

/// Murder's HTTP timeout for tracker requests.
const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("tracker {url}: {reason}")]
    Failed { url: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceEvent {
    Started,
    Completed,
    Stopped,
    Regular,
}

pub struct AnnounceParams {
    pub info_hash: [u8; 20],
    pub peer_id: [u8; 20],
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: AnnounceEvent,
    pub ip: Option<IpAddr>,
    pub numwant: usize,
    /// A closed swarm's tracker token.
    pub token: Option<String>,
}

#[derive(Debug, Default)]
pub struct AnnounceReply {
    pub interval: Option<Duration>,
    pub peers: Vec<SocketAddr>,
}

pub struct Announcer {
    client: Client<HttpConnector, Empty<Bytes>>,
    url: String,
}

/// Runs the HTTP client's connection tasks on the session's task tracker,
/// so that a shutdown waits for them like for every other task (they end
/// when the `Announcer` that owns their pool is dropped).
#[derive(Clone)]
struct OnTracker(TaskTracker);

impl<F> hyper::rt::Executor<F> for OnTracker
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

impl Announcer {
    /// An announcer to `url` whose connections are tasks of `tasks`.
    pub fn new(url: String, tasks: TaskTracker) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        Announcer {
            client: Client::builder(OnTracker(tasks)).build(connector),
            url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub async fn announce(&self, p: &AnnounceParams) -> Result<AnnounceReply, AnnounceError> {
        let fail = |reason: String| AnnounceError::Failed {
            url: self.url.clone(),
            reason,
        };
        let mut url = format!(
            "{}{}info_hash={}&peer_id={}&port={}&uploaded={}&downloaded={}&left={}&compact=1&numwant={}",
            self.url,
            if self.url.contains('?') { '&' } else { '?' },
            percent_encode(&p.info_hash, NON_ALPHANUMERIC),
            percent_encode(&p.peer_id, NON_ALPHANUMERIC),
            p.port,
            p.uploaded,
            p.downloaded,
            p.left,
            p.numwant
        );
        match p.event {
            AnnounceEvent::Started => url.push_str("&event=started"),
            AnnounceEvent::Completed => url.push_str("&event=completed"),
            AnnounceEvent::Stopped => url.push_str("&event=stopped"),
            AnnounceEvent::Regular => {}
        }
        if let Some(token) = &p.token {
            url.push_str("&token=");
            url.push_str(token);
        }
        if let Some(ip) = p.ip {
            url.push_str("&ip=");
            url.push_str(&percent_encode(ip.to_string().as_bytes(), NON_ALPHANUMERIC).to_string());
        }
        let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("bad URL: {e}")))?;
        let request = async {
            let response = self
                .client
                .get(uri)
                .await
                .map_err(|e| fail(with_causes(&e)))?;
            if !response.status().is_success() {
                return Err(fail(format!("HTTP {}", response.status())));
            }
            let body = Limited::new(response.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(TIMEOUT, request)
            .await
            .map_err(|_| fail("timed out".into()))??;
        parse_reply(&body).map_err(fail)
    }
}

/// An error and what caused it, down the chain: hyper says only "client
/// error (Connect)", its source why ("Connection refused").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Reads a tracker's bencoded reply.
pub fn parse_reply(body: &[u8]) -> Result<AnnounceReply, String> {
    let mut decoder = Decoder::new(body).with_max_depth(8);
    let Ok(Some(Object::Dict(mut dict))) = decoder.next_object() else {
        return Err("reply is not a bencoded dictionary".into());
    };
    let mut reply = AnnounceReply::default();
    let bad = |e: bendy::decoding::Error| format!("malformed reply: {e}");
    while let Some((key, value)) = dict.next_pair().map_err(bad)? {
        match (key, value) {
            (b"failure reason", Object::Bytes(reason)) => {
                return Err(String::from_utf8_lossy(reason).into_owned());
            }
            (b"interval", Object::Integer(n)) => {
                reply.interval = n.parse::<u64>().ok().map(Duration::from_secs);
            }
            (b"peers", Object::Bytes(compact)) => {
                for chunk in compact.chunks_exact(6) {
                    let ip = Ipv4Addr::new(chunk[0], chunk[1], chunk[2], chunk[3]);
                    let port = u16::from_be_bytes([chunk[4], chunk[5]]);
                    reply.peers.push(SocketAddr::new(ip.into(), port));
                }
            }
            (b"peers6", Object::Bytes(compact)) => {
                for chunk in compact.chunks_exact(18) {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&chunk[..16]);
                    let port = u16::from_be_bytes([chunk[16], chunk[17]]);
                    reply
                        .peers
                        .push(SocketAddr::new(Ipv6Addr::from(octets).into(), port));
                }
            }
            (b"peers", Object::List(mut list)) => {
                while let Some(item) = list.next_object().map_err(bad)? {
                    let Object::Dict(mut peer) = item else {
                        continue;
                    };
                    let (mut ip, mut port) = (None, None);
                    while let Some((k, v)) = peer.next_pair().map_err(bad)? {
                        match (k, v) {
                            (b"ip", Object::Bytes(b)) => {
                                ip = std::str::from_utf8(b)
                                    .ok()
                                    .and_then(|s| s.parse::<IpAddr>().ok())
                            }
                            (b"port", Object::Integer(n)) => port = n.parse::<u16>().ok(),
                            _ => {}
                        }
                    }
                    if let (Some(ip), Some(port)) = (ip, port) {
                        reply.peers.push(SocketAddr::new(ip, port));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(reply)
}

/// The local address of the route to the tracker: what peers elsewhere can
/// reach us at (never a guess from the host name, Murder's old trouble).
pub async fn local_address_towards(url: &str) -> Option<IpAddr> {
    let uri: hyper::Uri = url.parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()?
        .next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(target).await.ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_compact_dict_and_failure_replies() {
        let r = parse_reply(b"d8:intervali15e5:peers6:\x7f\x00\x00\x01\x1a\xe1e").unwrap();
        assert_eq!(r.interval, Some(Duration::from_secs(15)));
        assert_eq!(r.peers, vec!["127.0.0.1:6881".parse().unwrap()]);
        let d = parse_reply(b"d5:peersld2:ip8:10.0.0.14:porti7000eeee").unwrap();
        assert_eq!(d.peers, vec!["10.0.0.1:7000".parse().unwrap()]);
        assert_eq!(
            parse_reply(b"d14:failure reason4:nopee").unwrap_err(),
            "nope"
        );
        assert!(parse_reply(b"garbage").is_err());
    }
}
