//! Who may talk to a session: connected peers, the addresses known from the
//! tracker, strikes and bans. One lock (a leaf: nothing else is locked
//! while it is held, see STATE.md).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failed pieces a peer may send alone before it is banned.
const STRIKES_TO_BAN: u32 = 2;
/// Addresses kept from trackers (a fleet's size at most, as `max_peers`
/// is): a tracker's reply, or someone between us and a plain-HTTP tracker,
/// could otherwise hand us a million.
const MAX_KNOWN: usize = 10_000;
/// Peer ids of connections that left, kept for late blame (a piece they
/// sent part of fails after they left): the most recent this many, so that
/// peers connecting and leaving without end cannot grow the table.
const MAX_DEPARTED: usize = 10_000;

#[derive(Default)]
struct Table {
    connected: HashMap<u64, [u8; 20]>,
    /// Every connection's peer id, kept after it leaves (for late blame),
    /// up to `MAX_DEPARTED` of those that left.
    ids: HashMap<u64, [u8; 20]>,
    /// Connections that left, oldest first.
    departed: std::collections::VecDeque<u64>,
    /// Addresses we are connected or dialling to.
    addresses: HashSet<SocketAddr>,
    known: Vec<SocketAddr>,
    /// The same addresses, to tell a new one in O(1).
    known_set: HashSet<SocketAddr>,
    strikes: HashMap<[u8; 20], u32>,
    banned_ids: HashSet<[u8; 20]>,
    banned_addrs: HashSet<SocketAddr>,
    /// Addresses not to dial again before then.
    failed_until: HashMap<SocketAddr, Instant>,
    next_key: u64,
}

pub(crate) struct Admission {
    table: Mutex<Table>,
    our_id: [u8; 20],
    max_peers: usize,
}

impl Admission {
    pub fn new(our_id: [u8; 20], max_peers: usize, known: Vec<SocketAddr>) -> Self {
        Admission {
            table: Mutex::new(Table {
                known_set: known.iter().copied().collect(),
                known,
                next_key: 1, // 0 is `picker::PAD_SOURCE`
                ..Table::default()
            }),
            our_id,
            max_peers,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a handshaken peer and returns its connection key; `None`
    /// if it is us, banned, already connected, or one too many. A banned
    /// peer's address is banned too.
    pub fn admit(&self, peer_id: [u8; 20], addr: Option<SocketAddr>) -> Option<u64> {
        let mut t = self.table();
        if t.banned_ids.contains(&peer_id) {
            if let Some(addr) = addr {
                t.banned_addrs.insert(addr);
            }
            return None;
        }
        if peer_id == self.our_id
            || t.connected.values().any(|id| *id == peer_id)
            || t.connected.len() >= self.max_peers
        {
            return None;
        }
        let key = t.next_key;
        t.next_key += 1;
        t.connected.insert(key, peer_id);
        t.ids.insert(key, peer_id);
        if let Some(addr) = addr {
            t.addresses.insert(addr);
        }
        Some(key)
    }

    /// A connection ended.
    pub fn leave(&self, key: u64) {
        let mut t = self.table();
        if t.connected.remove(&key).is_some() {
            t.departed.push_back(key);
            // One in, at most one out: the queue never holds more.
            if t.departed.len() > MAX_DEPARTED {
                if let Some(oldest) = t.departed.pop_front() {
                    t.ids.remove(&oldest);
                }
            }
        }
    }

    pub fn connected(&self) -> usize {
        self.table().connected.len()
    }

    /// Whether any peer was ever admitted.
    pub fn ever_admitted(&self) -> bool {
        self.table().next_key > 1
    }

    /// A piece sent entirely by this connection failed its hash: strike it;
    /// repeat offenders are banned.
    pub fn strike(&self, key: u64) {
        let mut t = self.table();
        let Some(&id) = t.ids.get(&key) else {
            return;
        };
        let strikes = t.strikes.entry(id).or_insert(0);
        *strikes += 1;
        if *strikes >= STRIKES_TO_BAN {
            t.banned_ids.insert(id);
        }
    }

    /// A connection proven to have sent bytes that are not the torrent's.
    pub fn ban(&self, key: u64) {
        let mut t = self.table();
        if let Some(&id) = t.ids.get(&key) {
            t.banned_ids.insert(id);
        }
    }

    pub fn is_banned(&self, key: u64) -> bool {
        let t = self.table();
        t.ids.get(&key).is_some_and(|id| t.banned_ids.contains(id))
    }

    pub fn banned(&self) -> usize {
        self.table().banned_ids.len()
    }

    pub fn ban_address(&self, addr: SocketAddr) {
        self.table().banned_addrs.insert(addr);
    }

    /// Addresses from the tracker: new ones, up to `MAX_KNOWN` in all.
    pub fn learn(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut t = self.table();
        for addr in addrs {
            if t.known.len() >= MAX_KNOWN {
                break;
            }
            if t.known_set.insert(addr) {
                t.known.push(addr);
            }
        }
    }

    /// Addresses to dial now, marked as being dialled. At most half the
    /// slots are ours to dial: the rest stay open for peers that join
    /// later, which would otherwise find every earlier peer full.
    pub fn to_dial(&self) -> Vec<SocketAddr> {
        let mut t = self.table();
        let now = Instant::now();
        t.failed_until.retain(|_, until| *until > now);
        let dial_share = self.max_peers.div_ceil(2);
        let room = self
            .max_peers
            .saturating_sub(t.connected.len())
            .min(dial_share.saturating_sub(t.addresses.len()));
        let picked: Vec<SocketAddr> = t
            .known
            .iter()
            .filter(|addr| {
                !t.addresses.contains(addr)
                    && !t.banned_addrs.contains(addr)
                    && !t.failed_until.contains_key(addr)
                    && addr.port() != 0
            })
            .take(room)
            .copied()
            .collect();
        t.addresses.extend(&picked);
        picked
    }

    /// Our connection to `addr` ended: dial it again no sooner than `pause`.
    pub fn dial_ended(&self, addr: SocketAddr, pause: Duration) {
        let mut t = self.table();
        t.addresses.remove(&addr);
        t.failed_until.insert(addr, Instant::now() + pause);
    }
}

#[cfg(test)]
mod learning_tests {
    use super::*;

    /// A hostile tracker reply of 200,000 addresses: learnt in one pass
    /// (a linear search per address took minutes under the lock every
    /// peer task takes), and at most `MAX_KNOWN` kept.
    #[test]
    fn a_flood_of_addresses_is_learnt_fast_and_bounded() {
        let admission = Admission::new([1; 20], 16, Vec::new());
        let flood = (0..200_000u32)
            .map(|i| SocketAddr::new(std::net::Ipv4Addr::from(0x0a00_0000 + i).into(), 6881));
        let started = Instant::now();
        admission.learn(flood.clone());
        admission.learn(flood);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(admission.table().known.len(), MAX_KNOWN);
    }

    /// Peers that connect and leave without end (an open swarm lets
    /// anyone) kept one peer id each for the session's life.
    #[test]
    fn peers_that_come_and_go_leave_a_bounded_table() {
        let admission = Admission::new([1; 20], 16, Vec::new());
        for i in 0..30_000u32 {
            let mut id = [9; 20];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let key = admission.admit(id, None).expect("admitted");
            admission.leave(key);
        }
        assert!(admission.table().ids.len() <= MAX_DEPARTED);
        // The latest are kept for blame.
        let mut id = [9; 20];
        id[..4].copy_from_slice(&29_999u32.to_be_bytes());
        assert!(admission.table().ids.values().any(|v| *v == id));
    }
}
