//! Announce and scrape requests (BEP 3, BEP 23, BEP 48) parsed from the raw
//! query string. `info_hash` and `peer_id` are 20 binary bytes sent
//! percent-encoded, so the query is decoded to bytes, never to text.

use std::net::IpAddr;

use std::borrow::Cow;

use percent_encoding::percent_decode;

pub type InfoHash = [u8; 20];
pub type PeerId = [u8; 20];

/// Most key=value pairs a request may carry; real clients send about 12.
const MAX_PAIRS: usize = 64;
/// Most info-hashes one scrape may ask for.
pub const MAX_SCRAPE_HASHES: usize = 128;

/// Why a request was refused; sent back as the bencoded `failure reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError(message.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce.
    None,
    Started,
    Completed,
    Stopped,
    /// BEP 21: a partial seed that downloads no more.
    Paused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub info_hash: InfoHash,
    pub peer_id: PeerId,
    pub port: u16,
    pub uploaded: u64,
    pub downloaded: u64,
    pub left: u64,
    pub event: Event,
    pub numwant: Option<usize>,
    /// The address the peer asks to be reached at (Murder's hosts set it).
    pub ip: Option<IpAddr>,
    pub compact: bool,
    pub no_peer_id: bool,
    /// A closed swarm's tracker token (see `crate::secure`).
    pub token: Option<Vec<u8>>,
}

/// A decoded `key=value` pair; borrowed from the query unless it had
/// escapes (an announce's keys and numbers never do: no allocation).
type Pair<'q> = (Cow<'q, [u8]>, Cow<'q, [u8]>);

/// Decoded `key=value` pairs of a query string.
fn pairs(query: &[u8]) -> Result<Vec<Pair<'_>>, RequestError> {
    let mut out = Vec::with_capacity(16);
    for part in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if out.len() == MAX_PAIRS {
            return fail(format!("more than {MAX_PAIRS} parameters"));
        }
        let (key, value) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (&part[..i], &part[i + 1..]),
            None => (part, &b""[..]),
        };
        out.push((percent_decode(key).into(), percent_decode(value).into()));
    }
    Ok(out)
}

fn twenty(value: &[u8], name: &str) -> Result<[u8; 20], RequestError> {
    value
        .try_into()
        .or_else(|_| fail(format!("{name} must be 20 bytes, got {}", value.len())))
}

fn number(value: &[u8], name: &str) -> Result<u64, RequestError> {
    std::str::from_utf8(value)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .map_or_else(
            || fail(format!("{name} must be a non-negative integer")),
            Ok,
        )
}

/// Parses the query of `GET /announce?…`.
pub fn parse_announce(query: &[u8]) -> Result<Announce, RequestError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut uploaded = 0;
    let mut downloaded = 0;
    let mut left = None;
    let mut event = Event::None;
    let mut numwant = None;
    let mut ip = None;
    let mut compact = true;
    let mut no_peer_id = false;
    let mut token = None;
    for (key, value) in pairs(query)? {
        match &*key {
            b"info_hash" => info_hash = Some(twenty(&value, "info_hash")?),
            b"peer_id" => peer_id = Some(twenty(&value, "peer_id")?),
            b"port" => match number(&value, "port")? {
                p @ 1..=65535 => port = Some(p as u16),
                _ => return fail("port must be between 1 and 65535"),
            },
            b"uploaded" => uploaded = number(&value, "uploaded")?,
            b"downloaded" => downloaded = number(&value, "downloaded")?,
            b"left" => left = Some(number(&value, "left")?),
            b"numwant" => {
                numwant = Some(number(&value, "numwant")?.min(usize::MAX as u64) as usize)
            }
            b"compact" => compact = &*value != b"0",
            b"no_peer_id" => no_peer_id = &*value == b"1",
            b"token" => token = Some(value.into_owned()),
            b"event" => {
                event = match &*value {
                    b"" | b"empty" => Event::None,
                    b"started" => Event::Started,
                    b"completed" => Event::Completed,
                    b"stopped" => Event::Stopped,
                    b"paused" => Event::Paused,
                    _ => return fail("event must be started, completed, stopped or empty"),
                }
            }
            // BEP 3's `ip` may also be a DNS name, which is not looked up:
            // the source address stands. BEP 7's `ipv4`/`ipv6` name further
            // addresses (perhaps with a port), never a replacement: a dual-
            // stack client announcing over IPv4 with `ipv6=` stays reachable
            // over IPv4. One address is kept per peer, so they are ignored.
            b"ip" => {
                let text = std::str::from_utf8(&value).unwrap_or("");
                if let Ok(addr) = text.parse::<IpAddr>() {
                    ip = ip.or(Some(addr.to_canonical()));
                }
            }
            _ => {} // key, trackerid, supportcrypto, corrupt, …
        }
    }
    Ok(Announce {
        info_hash: info_hash.map_or_else(|| fail("missing info_hash"), Ok)?,
        peer_id: peer_id.map_or_else(|| fail("missing peer_id"), Ok)?,
        port: port.map_or_else(|| fail("missing port"), Ok)?,
        uploaded,
        downloaded,
        left: left.map_or_else(|| fail("missing left"), Ok)?,
        event,
        numwant,
        ip,
        compact,
        no_peer_id,
        token,
    })
}

/// The `token` of any request (scrapes, the pages), if it has one.
pub fn query_token(query: &[u8]) -> Option<Vec<u8>> {
    pairs(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| &**k == b"token")
        .map(|(_, v)| v.into_owned())
}

/// Parses the query of `GET /scrape?…`; no `info_hash` means every torrent.
pub fn parse_scrape(query: &[u8]) -> Result<Vec<InfoHash>, RequestError> {
    let mut hashes = Vec::new();
    for (key, value) in pairs(query)? {
        if &*key == b"info_hash" {
            if hashes.len() == MAX_SCRAPE_HASHES {
                return fail(format!(
                    "at most {MAX_SCRAPE_HASHES} info_hash values per scrape"
                ));
            }
            hashes.push(twenty(&value, "info_hash")?);
        }
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A";

    fn query(extra: &str) -> String {
        format!("info_hash={HASH}&peer_id=-MU0100-abcdefghijkl&port=6881&uploaded=0&downloaded=0&left=100{extra}")
    }

    #[test]
    fn parses_a_real_announce() {
        let a = parse_announce(query("&event=started&numwant=30&compact=1&ip=10.1.2.3").as_bytes())
            .unwrap();
        assert_eq!(a.info_hash[0], 0x12);
        assert_eq!(&a.peer_id, b"-MU0100-abcdefghijkl");
        assert_eq!((a.port, a.left, a.numwant), (6881, 100, Some(30)));
        assert_eq!(a.event, Event::Started);
        assert_eq!(a.ip, Some("10.1.2.3".parse().unwrap()));
        assert!(a.compact);
        assert!(
            !parse_announce(query("&compact=0").as_bytes())
                .unwrap()
                .compact
        );
        let v6 = parse_announce(query("&ip=%3A%3A1").as_bytes()).unwrap();
        assert_eq!(v6.ip, Some("::1".parse().unwrap()));
    }

    /// BEP 3 lets `ip` be a DNS name and BEP 7 adds `ipv4`/`ipv6`, with a
    /// port or without: none of them refuses the announce (a client got a
    /// failure instead of peers), and only `ip` replaces the source
    /// address (`ipv6=` recorded a client that announced over IPv4 under
    /// its IPv6 address alone).
    #[test]
    fn other_addresses_a_client_names_never_refuse_or_replace_its_own() {
        for extra in [
            "&ip=host.example",
            "&ipv6=2001:db8::1",
            "&ipv6=%5B2001%3Adb8%3A%3A1%5D%3A6881",
            "&ipv4=10.0.0.1:6881",
            "&ipv4=10.0.0.1",
        ] {
            let a = parse_announce(query(extra).as_bytes());
            assert_eq!(a.map(|a| a.ip), Ok(None), "{extra}");
        }
        // An IPv4 address written as IPv6 is the IPv4 one.
        let mapped = parse_announce(query("&ip=%3A%3Affff%3A10.0.0.1").as_bytes()).unwrap();
        assert_eq!(mapped.ip, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn refuses_malformed_announces() {
        for (q, message) in [
            (
                "info_hash=abc&peer_id=-MU0100-abcdefghijkl&port=1&left=0".to_string(),
                "info_hash must be 20 bytes, got 3",
            ),
            (
                format!("info_hash={HASH}&peer_id=short&port=1&left=0"),
                "peer_id must be 20 bytes, got 5",
            ),
            (
                format!("info_hash={HASH}&peer_id=-MU0100-abcdefghijkl&left=0"),
                "missing port",
            ),
            (query("&port=0"), "port must be between 1 and 65535"),
            (query("&port=70000"), "port must be between 1 and 65535"),
            (query("&left=-1"), "left must be a non-negative integer"),
            (
                query("&uploaded=1e9"),
                "uploaded must be a non-negative integer",
            ),
            (
                query("&left=99999999999999999999999"),
                "left must be a non-negative integer",
            ),
            (
                query("&numwant=lots"),
                "numwant must be a non-negative integer",
            ),
            (
                query("&event=exploded"),
                "event must be started, completed, stopped or empty",
            ),
            ("%ff%00garbage&&&==".to_string(), "missing info_hash"),
            (
                format!("{}&x", "a=1&".repeat(70)),
                "more than 64 parameters",
            ),
        ] {
            assert_eq!(
                parse_announce(q.as_bytes()),
                Err(RequestError(message.into())),
                "{q}"
            );
        }
    }

    #[test]
    fn parses_scrapes() {
        let two = format!("info_hash={HASH}&info_hash={HASH}");
        assert_eq!(parse_scrape(two.as_bytes()).unwrap().len(), 2);
        assert!(parse_scrape(b"").unwrap().is_empty());
        assert!(parse_scrape(b"info_hash=zz").is_err());
    }
}
