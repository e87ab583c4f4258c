//! The tracker's state: the allow-listed torrents and, for each, the peers
//! that announced recently. Peer handout is where a tracker helps a fast
//! deploy: never the asking peer itself, a random mix of seeds and
//! downloaders for a downloader, only downloaders for a seed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::peer_set::{Peer, PeerSet};
use super::request::{Announce, Event, InfoHash, PeerId};

/// Where an allow-list entry came from: entries from a watched directory go
/// away when their file does; the others stay until the tracker stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowSource {
    Given,
    Dir(PathBuf),
}

/// How big a torrent is: its total length (pad files included, as the info
/// dictionary counts) and the data a peer holds of it (pads excluded: what
/// a peer's `left` counts down from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    pub total: u64,
    pub data: u64,
}

/// Completion times kept per swarm for the dashboard's curve: a fleet's
/// worth (`max_peers` goes up to 10,000 too).
const MAX_COMPLETIONS_KEPT: usize = 10_000;

#[derive(Debug)]
struct Swarm {
    name: String,
    lengths: Option<Lengths>,
    source: AllowSource,
    peers: PeerSet,
    /// How many peers announced `completed` (the scrape's `downloaded`).
    completed: u64,
    /// The first announce, and when each completion came after it (the
    /// first `MAX_COMPLETIONS_KEPT`: announcing `completed` under fresh peer
    /// ids costs nothing).
    first_seen: Option<Instant>,
    completed_at: Vec<f64>,
    /// A closed swarm's tracker token: without it, the torrent is as
    /// unknown (announces fail as for a torrent not allowed; scrapes and
    /// stats leave it out).
    token: Option<String>,
}

/// Who asks, for what the tracker shows: the operator sees every torrent;
/// anyone else the open ones and the closed one whose token they hold.
#[derive(Debug, Clone, Copy)]
pub enum Viewer<'a> {
    Operator,
    Holder(Option<&'a [u8]>),
}

impl Swarm {
    fn completion_at(&mut self, since: f64) {
        if self.completed_at.len() < MAX_COMPLETIONS_KEPT {
            self.completed_at.push(since);
        }
    }

    fn shown_to(&self, viewer: Viewer) -> bool {
        match (&self.token, viewer) {
            (None, _) | (_, Viewer::Operator) => true,
            (Some(ours), Viewer::Holder(theirs)) => {
                theirs.is_some_and(|t| crate::secure::tokens_match(ours.as_bytes(), t))
            }
        }
    }

    fn counts(&self) -> (usize, usize) {
        (self.peers.seeds(), self.peers.downloaders())
    }
}

/// What an announce gets back.
#[derive(Debug, Default)]
pub struct Reply {
    pub peers: Vec<(PeerId, SocketAddr)>,
    pub complete: usize,
    pub incomplete: usize,
}

/// Scrape counts of one torrent (BEP 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScrapeCounts {
    pub complete: usize,
    pub incomplete: usize,
    pub downloaded: u64,
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub torrents: Vec<TorrentStats>,
}

#[derive(Debug, Serialize)]
pub struct TorrentStats {
    pub info_hash: String,
    pub name: String,
    pub total_length: Option<u64>,
    /// What each peer holds when done: `total_length` without pad files
    /// (what `left` and `percent_done` count from).
    pub data_length: Option<u64>,
    pub seeds: usize,
    pub downloaders: usize,
    pub completed: u64,
    /// Seconds since the first announce of this swarm.
    pub seconds: f64,
    /// When each completion came, in seconds after the first announce.
    pub completed_at: Vec<f64>,
    /// Bytes still missing, summed over the peers of the swarm.
    pub bytes_left: u64,
    pub peers: Vec<PeerStats>,
}

#[derive(Debug, Serialize)]
pub struct PeerStats {
    pub ip: String,
    pub port: u16,
    pub left: u64,
    pub uploaded: u64,
    pub downloaded: u64,
    pub percent_done: Option<f64>,
    pub seconds_since_announce: f64,
    /// Bytes/s by which `left` fell between the peer's last two announces.
    pub rate: f64,
}

#[derive(Debug)]
pub struct Registry {
    torrents: HashMap<InfoHash, Swarm>,
    /// Entries one source address on the network may make in a swarm
    /// (`TrackerConfig::max_peers_per_address`): a host runs one peer, and
    /// a holder of a closed swarm's token announcing fresh peer ids made
    /// one entry each, without end. The tracker's own machine (loopback:
    /// its tests and benches run hundreds of peers there, and a relay's
    /// hosts all arrive from it) is not bounded.
    source_limit: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::with_source_limit(super::DEFAULT_MAX_PEERS_PER_ADDRESS)
    }
}

impl Registry {
    /// A registry in which one source address (not loopback) makes at
    /// most `limit` entries per swarm.
    pub fn with_source_limit(limit: usize) -> Registry {
        Registry {
            torrents: HashMap::new(),
            source_limit: limit,
        }
    }

    /// Adds a torrent to the allow-list (or refreshes its name and size).
    /// A closed swarm stays closed: allowed again without a token (its
    /// file seen again by an allow directory's reload, say), it keeps its
    /// token; only another token replaces it.
    pub fn allow(
        &mut self,
        hash: InfoHash,
        name: String,
        lengths: Option<Lengths>,
        source: AllowSource,
        token: Option<String>,
    ) {
        let swarm = self.torrents.entry(hash).or_insert_with(|| Swarm {
            name: name.clone(),
            lengths,
            source: source.clone(),
            peers: PeerSet::default(),
            completed: 0,
            first_seen: None,
            completed_at: Vec::new(),
            token: token.clone(),
        });
        swarm.name = name;
        if token.is_some() {
            swarm.token = token;
        }
        swarm.lengths = lengths.or(swarm.lengths);
        // A torrent also given explicitly outlives its directory file.
        if source == AllowSource::Given {
            swarm.source = AllowSource::Given;
        }
    }

    pub fn is_allowed(&self, hash: &InfoHash) -> bool {
        self.torrents.contains_key(hash)
    }

    /// Keeps, of the entries that came from `dir`, only those in `keep`.
    pub fn retain_dir_entries(&mut self, dir: &Path, keep: &[InfoHash]) {
        self.torrents.retain(|hash, swarm| {
            !matches!(&swarm.source, AllowSource::Dir(d) if d == dir) || keep.contains(hash)
        });
    }

    /// Records an announce and picks peers for the reply. `from` is the
    /// address the request came from, used when the peer names no `ip`.
    pub fn announce(
        &mut self,
        request: &Announce,
        from: IpAddr,
        numwant: usize,
        now: Instant,
    ) -> Option<Reply> {
        let swarm = self.torrents.get_mut(&request.info_hash)?;
        if !swarm.shown_to(Viewer::Holder(request.token.as_deref())) {
            return None; // rule: only an announce with the token counts
        }
        let first_seen = *swarm.first_seen.get_or_insert(now);
        let since = now.saturating_duration_since(first_seen).as_secs_f64();
        let from = from.to_canonical();
        let ip = request.ip.unwrap_or(from);
        // A download counts as completed on `event=completed`, or when a
        // peer we saw missing bytes reports none left (aria2 sends only
        // `stopped` when it finishes with --seed-time=0).
        let known = swarm.peers.get(&request.peer_id);
        // An entry belongs to the address that made it: a holder of the
        // token announcing another host's peer id from elsewhere could
        // otherwise point that entry at any address or remove it. Such an
        // announce records nothing and is answered like any other (a host
        // whose address changed is recorded anew once its entry expires).
        if known.is_some_and(|p| p.from != from) {
            return Some(Self::reply(swarm, request, numwant));
        }
        // Nor does a new entry past the source's share.
        if known.is_none()
            && !from.is_loopback()
            && swarm.peers.from_source(from) >= self.source_limit
        {
            tracing::debug!(
                "{from}: {} entries in {} already; not recorded",
                self.source_limit,
                swarm.name
            );
            return Some(Self::reply(swarm, request, numwant));
        }
        let was_downloading = known.map(|p| p.left > 0);
        let already_counted = known.is_some_and(|p| p.counted_complete);
        let finished = request.event == Event::Completed
            || (was_downloading == Some(true) && request.left == 0);
        if request.event == Event::Stopped {
            if let Some(peer) = swarm.peers.remove(&request.peer_id) {
                if finished && !peer.counted_complete {
                    swarm.completed += 1;
                    swarm.completion_at(since);
                }
            }
        } else {
            let addr = SocketAddr::new(ip, request.port);
            swarm.peers.upsert(
                request.peer_id,
                || Peer {
                    addr,
                    from,
                    left: request.left,
                    uploaded: 0,
                    downloaded: 0,
                    last_seen: now,
                    counted_complete: false,
                    rate: 0.0,
                },
                |peer| {
                    let elapsed = now.saturating_duration_since(peer.last_seen).as_secs_f64();
                    if elapsed > 0.0 {
                        peer.rate = peer.left.saturating_sub(request.left) as f64 / elapsed;
                    }
                    peer.addr = addr;
                    peer.left = request.left;
                    peer.uploaded = request.uploaded;
                    peer.downloaded = request.downloaded;
                    peer.last_seen = now;
                    peer.counted_complete |= finished;
                },
            );
            if finished && !already_counted {
                swarm.completed += 1;
                swarm.completion_at(since);
            }
        }
        Some(Self::reply(swarm, request, numwant))
    }

    /// The counts, and a random pick of peers (so that downloaders spread
    /// over the whole swarm; a seed gets downloaders only).
    fn reply(swarm: &Swarm, request: &Announce, numwant: usize) -> Reply {
        let (complete, incomplete) = swarm.counts();
        let mut reply = Reply {
            peers: Vec::new(),
            complete,
            incomplete,
        };
        if request.event == Event::Stopped || numwant == 0 {
            return reply;
        }
        let asking_seed = request.left == 0;
        reply.peers = swarm.peers.pick(&request.peer_id, !asking_seed, numwant);
        reply
    }

    pub fn scrape(&self, hash: &InfoHash, viewer: Viewer) -> Option<ScrapeCounts> {
        self.torrents
            .get(hash)
            .filter(|s| s.shown_to(viewer))
            .map(|s| {
                let (complete, incomplete) = s.counts();
                ScrapeCounts {
                    complete,
                    incomplete,
                    downloaded: s.completed,
                }
            })
    }

    pub fn hashes(&self, viewer: Viewer) -> Vec<InfoHash> {
        self.torrents
            .iter()
            .filter(|(_, s)| s.shown_to(viewer))
            .map(|(h, _)| *h)
            .collect()
    }

    /// Forgets peers that have not announced within `timeout`.
    pub fn expire(&mut self, now: Instant, timeout: Duration) {
        for swarm in self.torrents.values_mut() {
            swarm
                .peers
                .retain(|p| now.saturating_duration_since(p.last_seen) <= timeout);
        }
    }

    pub fn stats(&self, now: Instant, viewer: Viewer) -> Stats {
        let mut torrents: Vec<TorrentStats> = self
            .torrents
            .iter()
            .filter(|(_, s)| s.shown_to(viewer))
            .map(|(hash, s)| {
                let (seeds, downloaders) = s.counts();
                let mut peers: Vec<PeerStats> = s
                    .peers
                    .iter()
                    .map(|(_, p)| PeerStats {
                        ip: p.addr.ip().to_string(),
                        port: p.addr.port(),
                        left: p.left,
                        uploaded: p.uploaded,
                        downloaded: p.downloaded,
                        percent_done: s.lengths.map(|l| l.data).filter(|&t| t > 0).map(|t| {
                            let done = t.saturating_sub(p.left) as f64 / t as f64;
                            // Floor: 99.99% must not show as done.
                            (done * 1000.0).floor() / 10.0
                        }),
                        seconds_since_announce: now
                            .saturating_duration_since(p.last_seen)
                            .as_secs_f64(),
                        rate: if p.left == 0 { 0.0 } else { p.rate },
                    })
                    .collect();
                peers.sort_by(|a, b| (&a.ip, a.port).cmp(&(&b.ip, b.port)));
                TorrentStats {
                    info_hash: hex::encode(hash),
                    name: s.name.clone(),
                    total_length: s.lengths.map(|l| l.total),
                    data_length: s.lengths.map(|l| l.data),
                    seeds,
                    downloaders,
                    completed: s.completed,
                    seconds: s
                        .first_seen
                        .map_or(0.0, |f| now.saturating_duration_since(f).as_secs_f64()),
                    completed_at: s.completed_at.clone(),
                    // `left` is what each client says: saturate, never overflow.
                    bytes_left: s
                        .peers
                        .iter()
                        .fold(0u64, |sum, (_, p)| sum.saturating_add(p.left)),
                    peers,
                }
            })
            .collect();
        torrents.sort_by(|a, b| (&a.name, &a.info_hash).cmp(&(&b.name, &b.info_hash)));
        Stats { torrents }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::DEFAULT_MAX_PEERS_PER_ADDRESS;

    const HASH: InfoHash = [1; 20];

    fn announce(id: u8, left: u64, event: Event) -> Announce {
        Announce {
            info_hash: HASH,
            peer_id: [id; 20],
            port: 6000 + id as u16,
            uploaded: 0,
            downloaded: 0,
            left,
            event,
            numwant: None,
            ip: None,
            compact: true,
            no_peer_id: false,
            token: None,
        }
    }

    fn registry() -> Registry {
        allowed(Registry::default())
    }

    /// `r` with the test torrent allowed.
    fn allowed(mut r: Registry) -> Registry {
        r.allow(
            HASH,
            "rel".into(),
            Some(Lengths {
                total: 100,
                data: 100,
            }),
            AllowSource::Given,
            None,
        );
        r
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn unknown_torrents_get_nothing() {
        let mut r = Registry::default();
        assert!(r
            .announce(&announce(1, 0, Event::Started), LOCAL, 50, Instant::now())
            .is_none());
        assert!(r
            .stats(Instant::now(), Viewer::Operator)
            .torrents
            .is_empty());
    }

    #[test]
    fn handout_excludes_self_and_seeds_get_only_downloaders() {
        let mut r = registry();
        let now = Instant::now();
        r.announce(&announce(1, 0, Event::Started), LOCAL, 50, now)
            .unwrap();
        r.announce(&announce(2, 0, Event::Started), LOCAL, 50, now)
            .unwrap();
        for id in 3..10 {
            r.announce(&announce(id, 100, Event::Started), LOCAL, 50, now)
                .unwrap();
        }
        let seed = r
            .announce(&announce(1, 0, Event::None), LOCAL, 50, now)
            .unwrap();
        assert_eq!(seed.peers.len(), 7);
        assert!(seed.peers.iter().all(|(id, _)| id[0] >= 3));
        let leech = r
            .announce(&announce(3, 50, Event::None), LOCAL, 50, now)
            .unwrap();
        assert_eq!(leech.peers.len(), 8);
        assert!(leech.peers.iter().all(|(id, _)| id[0] != 3));
        assert_eq!((leech.complete, leech.incomplete), (2, 7));
        let few = r
            .announce(&announce(4, 50, Event::None), LOCAL, 3, now)
            .unwrap();
        assert_eq!(few.peers.len(), 3);
    }

    #[test]
    fn the_announced_ip_wins_over_the_source_address() {
        let mut r = registry();
        let mut a = announce(1, 0, Event::Started);
        a.ip = Some("10.9.8.7".parse().unwrap());
        r.announce(&a, LOCAL, 50, Instant::now());
        let other = r
            .announce(&announce(2, 10, Event::Started), LOCAL, 50, Instant::now())
            .unwrap();
        assert_eq!(other.peers[0].1, "10.9.8.7:6001".parse().unwrap());
    }

    /// Rule: an entry changes only by announces from the address that made it.
    #[test]
    fn another_address_can_neither_move_nor_remove_a_peers_entry() {
        let mut r = registry();
        let now = Instant::now();
        let elsewhere: IpAddr = "10.66.0.9".parse().unwrap();
        r.announce(&announce(1, 10, Event::Started), LOCAL, 50, now);
        let mut moved = announce(1, 10, Event::None);
        moved.ip = Some("10.66.0.9".parse().unwrap());
        moved.port = 666;
        r.announce(&moved, elsewhere, 50, now);
        r.announce(&announce(1, 10, Event::Stopped), elsewhere, 50, now);
        let other = r
            .announce(&announce(2, 10, Event::Started), LOCAL, 50, now)
            .unwrap();
        assert_eq!(
            other.peers,
            vec![([1; 20], "127.0.0.1:6001".parse().unwrap())]
        );
        // From its own address (here as an IPv4-mapped IPv6 address, as a
        // dual-stack listener sees it), the peer still leaves.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        r.announce(&announce(1, 10, Event::Stopped), mapped, 50, now);
        let other = r
            .announce(&announce(2, 10, Event::None), LOCAL, 50, now)
            .unwrap();
        assert!(other.peers.is_empty());
    }

    /// The limit per address is the tracker's to set (hosts behind one NAT
    /// address): with 3, a fourth host from that address is not recorded.
    #[test]
    fn the_entries_per_address_follow_the_configured_limit() {
        let mut r = allowed(Registry::with_source_limit(3));
        let now = Instant::now();
        let nat: IpAddr = "10.66.0.7".parse().unwrap();
        for n in 0..5u64 {
            let mut a = announce(0, 10, Event::Started);
            a.peer_id[..8].copy_from_slice(&n.to_be_bytes());
            r.announce(&a, nat, 50, now);
        }
        assert_eq!(r.scrape(&HASH, Viewer::Operator).unwrap().incomplete, 3);
    }

    /// Rule: one source address makes at most DEFAULT_MAX_PEERS_PER_ADDRESS entries
    /// in a swarm; an entry that leaves makes room, other addresses are not
    /// held back.
    #[test]
    fn one_address_makes_a_bounded_number_of_entries() {
        let mut r = registry();
        let now = Instant::now();
        let fresh = |n: usize, event: Event| {
            let mut a = announce(0, 10, event);
            a.peer_id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            a
        };
        let host: IpAddr = "10.66.0.5".parse().unwrap();
        for n in 0..DEFAULT_MAX_PEERS_PER_ADDRESS + 100 {
            r.announce(&fresh(n, Event::Started), host, 50, now);
        }
        let counts = |r: &Registry| r.scrape(&HASH, Viewer::Operator).unwrap().incomplete;
        assert_eq!(counts(&r), DEFAULT_MAX_PEERS_PER_ADDRESS);
        let elsewhere: IpAddr = "10.66.0.9".parse().unwrap();
        r.announce(&fresh(100_000, Event::Started), elsewhere, 50, now);
        assert_eq!(counts(&r), DEFAULT_MAX_PEERS_PER_ADDRESS + 1);
        r.announce(&fresh(0, Event::Stopped), host, 50, now);
        r.announce(&fresh(200_000, Event::Started), host, 50, now);
        assert_eq!(counts(&r), DEFAULT_MAX_PEERS_PER_ADDRESS + 1);
        assert!(r
            .announce(&fresh(200_001, Event::Started), host, 50, now)
            .is_some_and(|reply| !reply.peers.is_empty()));
        assert_eq!(counts(&r), DEFAULT_MAX_PEERS_PER_ADDRESS + 1);
        // The tracker's own machine is not bounded.
        for n in 300_000..300_000 + DEFAULT_MAX_PEERS_PER_ADDRESS + 10 {
            r.announce(&fresh(n, Event::Started), LOCAL, 50, now);
        }
        assert_eq!(counts(&r), 2 * DEFAULT_MAX_PEERS_PER_ADDRESS + 11);
    }

    #[test]
    fn completed_is_counted_once_and_stopped_peers_leave() {
        let mut r = registry();
        let now = Instant::now();
        r.announce(&announce(1, 0, Event::Completed), LOCAL, 50, now);
        r.announce(&announce(1, 0, Event::Completed), LOCAL, 50, now);
        r.announce(&announce(2, 10, Event::Started), LOCAL, 50, now);
        assert_eq!(
            r.scrape(&HASH, Viewer::Operator),
            Some(ScrapeCounts {
                complete: 1,
                incomplete: 1,
                downloaded: 1
            })
        );
        r.announce(&announce(2, 10, Event::Stopped), LOCAL, 50, now);
        assert_eq!(r.scrape(&HASH, Viewer::Operator).unwrap().incomplete, 0);
        // Finishing without `completed`: seen downloading, then stopped with nothing left.
        r.announce(&announce(3, 10, Event::Started), LOCAL, 50, now);
        r.announce(&announce(3, 0, Event::Stopped), LOCAL, 50, now);
        assert_eq!(r.scrape(&HASH, Viewer::Operator).unwrap().downloaded, 2);
        let stats = r.stats(now, Viewer::Operator);
        assert_eq!(stats.torrents[0].peers.len(), 1);
        assert_eq!(stats.torrents[0].peers[0].percent_done, Some(100.0));
    }

    /// Completion times are kept for a fleet, not for whoever keeps
    /// announcing `completed` under fresh peer ids.
    #[test]
    fn completion_times_kept_are_bounded() {
        let mut r = registry();
        let now = Instant::now();
        for n in 0..(MAX_COMPLETIONS_KEPT as u32 + 50) {
            let mut a = announce(1, 0, Event::Completed);
            a.peer_id[..4].copy_from_slice(&n.to_be_bytes());
            // Each from a host of its own (one address's entries are bounded).
            let host = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            r.announce(&a, host, 0, now);
        }
        let stats = r.stats(now, Viewer::Operator);
        assert_eq!(
            stats.torrents[0].completed,
            MAX_COMPLETIONS_KEPT as u64 + 50
        );
        assert_eq!(stats.torrents[0].completed_at.len(), MAX_COMPLETIONS_KEPT);
    }

    #[test]
    fn silent_peers_expire() {
        let mut r = registry();
        let then = Instant::now();
        r.announce(&announce(1, 0, Event::Started), LOCAL, 50, then);
        r.expire(then + Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(r.scrape(&HASH, Viewer::Operator).unwrap().complete, 1);
        r.expire(then + Duration::from_secs(31), Duration::from_secs(30));
        assert_eq!(r.scrape(&HASH, Viewer::Operator).unwrap().complete, 0);
    }

    #[test]
    fn a_peers_rate_is_how_fast_left_fell_between_announces_and_completions_are_timed() {
        let mut r = registry();
        let then = Instant::now();
        r.announce(&announce(1, 100, Event::Started), LOCAL, 50, then);
        r.announce(
            &announce(1, 60, Event::None),
            LOCAL,
            50,
            then + Duration::from_secs(2),
        );
        let stats = r.stats(then + Duration::from_secs(2), Viewer::Operator);
        assert_eq!(stats.torrents[0].peers[0].rate, 20.0);
        r.announce(
            &announce(1, 0, Event::Completed),
            LOCAL,
            50,
            then + Duration::from_secs(3),
        );
        let stats = r.stats(then + Duration::from_secs(4), Viewer::Operator);
        assert_eq!(stats.torrents[0].peers[0].rate, 0.0, "a seed moves nothing");
        assert_eq!(stats.torrents[0].completed_at, vec![3.0]);
        assert_eq!(stats.torrents[0].seconds, 4.0);
    }

    #[test]
    fn a_closed_swarm_answers_only_with_its_token_and_shows_only_to_holders() {
        let mut r = Registry::default();
        r.allow(
            HASH,
            "secret-release".into(),
            Some(Lengths {
                total: 100,
                data: 100,
            }),
            AllowSource::Given,
            Some("t0k".into()),
        );
        let now = Instant::now();
        assert!(r
            .announce(&announce(1, 100, Event::Started), LOCAL, 50, now)
            .is_none());
        let mut with = announce(1, 100, Event::Started);
        with.token = Some(b"t0k".to_vec());
        assert!(r.announce(&with, LOCAL, 50, now).is_some());
        with.token = Some(b"t0j".to_vec());
        assert!(r.announce(&with, LOCAL, 50, now).is_none());
        for outsider in [Viewer::Holder(None), Viewer::Holder(Some(b"nope"))] {
            assert!(r.stats(now, outsider).torrents.is_empty());
            assert!(r.hashes(outsider).is_empty());
            assert!(r.scrape(&HASH, outsider).is_none());
        }
        assert_eq!(r.stats(now, Viewer::Holder(Some(b"t0k"))).torrents.len(), 1);
        assert_eq!(r.stats(now, Viewer::Operator).torrents[0].peers.len(), 1);
    }

    /// A torrent allowed again without a token (its file seen again in the
    /// allow directory, say) stays closed: only a token replaces a token.
    #[test]
    fn a_closed_swarm_allowed_again_without_a_token_stays_closed() {
        let mut r = Registry::default();
        r.allow(
            HASH,
            "rel".into(),
            None,
            AllowSource::Given,
            Some("t0k".into()),
        );
        r.allow(
            HASH,
            "rel".into(),
            None,
            AllowSource::Dir("/d".into()),
            None,
        );
        let now = Instant::now();
        assert!(r
            .announce(&announce(1, 100, Event::Started), LOCAL, 50, now)
            .is_none());
        assert!(r.hashes(Viewer::Holder(None)).is_empty());
        r.allow(
            HASH,
            "rel".into(),
            None,
            AllowSource::Given,
            Some("n3w".into()),
        );
        let mut with = announce(1, 100, Event::Started);
        with.token = Some(b"n3w".to_vec());
        assert!(r.announce(&with, LOCAL, 50, now).is_some());
    }
}
