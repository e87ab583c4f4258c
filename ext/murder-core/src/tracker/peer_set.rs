//! The peers of one swarm, filed as seeds or downloaders, so that an
//! announce costs O(numwant) and not O(swarm): counts are the two lengths,
//! and a random pick draws indices instead of copying and shuffling the
//! whole swarm (at 1,000 peers that copy was most of the tracker's own CPU
//! per announce).
//!
//! Invariant: `index[id]` names the list and position of `id`, and a peer
//! is in `seeds` exactly when its `left` is 0. Every change of `left` goes
//! through [`PeerSet::upsert`], which re-files the peer.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::request::PeerId;

#[derive(Debug)]
pub(super) struct Peer {
    pub addr: SocketAddr,
    /// The address the announce that made this entry came from: only
    /// announces from there change or remove it (see `Registry::announce`).
    pub from: std::net::IpAddr,
    pub left: u64,
    pub uploaded: u64,
    pub downloaded: u64,
    pub last_seen: std::time::Instant,
    pub counted_complete: bool,
    /// How fast `left` fell between the last two announces, bytes/s.
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Seed(usize),
    Downloader(usize),
}

#[derive(Debug, Default)]
pub(super) struct PeerSet {
    seeds: Vec<(PeerId, Peer)>,
    downloaders: Vec<(PeerId, Peer)>,
    index: HashMap<PeerId, Slot>,
    /// How many entries each source address made (`Peer::from`).
    per_source: HashMap<std::net::IpAddr, usize>,
}

impl PeerSet {
    pub fn seeds(&self) -> usize {
        self.seeds.len()
    }

    pub fn downloaders(&self) -> usize {
        self.downloaders.len()
    }

    /// How many entries the announces from `from` made.
    pub fn from_source(&self, from: std::net::IpAddr) -> usize {
        self.per_source.get(&from).copied().unwrap_or(0)
    }

    pub fn get(&self, id: &PeerId) -> Option<&Peer> {
        self.index.get(id).map(|&slot| &self.at(slot).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &Peer)> {
        self.seeds
            .iter()
            .chain(&self.downloaders)
            .map(|(id, p)| (id, p))
    }

    /// Applies `change` to the peer `id` (made by `make` if new) and files
    /// it by its new `left`. Returns the peer as changed.
    pub fn upsert(
        &mut self,
        id: PeerId,
        make: impl FnOnce() -> Peer,
        change: impl FnOnce(&mut Peer),
    ) -> &Peer {
        let mut entry = match self.index.get(&id) {
            Some(&slot) => self.take(slot),
            None => {
                let peer = make();
                *self.per_source.entry(peer.from).or_default() += 1;
                (id, peer)
            }
        };
        change(&mut entry.1);
        let slot = if entry.1.left == 0 {
            self.seeds.push(entry);
            Slot::Seed(self.seeds.len() - 1)
        } else {
            self.downloaders.push(entry);
            Slot::Downloader(self.downloaders.len() - 1)
        };
        self.index.insert(id, slot);
        &self.at(slot).1
    }

    pub fn remove(&mut self, id: &PeerId) -> Option<Peer> {
        let slot = self.index.remove(id)?;
        let peer = self.take(slot).1;
        if let Some(n) = self.per_source.get_mut(&peer.from) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&peer.from);
            }
        }
        Some(peer)
    }

    /// Keeps only the peers for which `keep` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&Peer) -> bool) {
        self.seeds.retain(|(_, p)| keep(p));
        self.downloaders.retain(|(_, p)| keep(p));
        self.index.clear();
        self.per_source.clear();
        for (_, p) in self.seeds.iter().chain(&self.downloaders) {
            *self.per_source.entry(p.from).or_default() += 1;
        }
        for (i, (id, _)) in self.seeds.iter().enumerate() {
            self.index.insert(*id, Slot::Seed(i));
        }
        for (i, (id, _)) in self.downloaders.iter().enumerate() {
            self.index.insert(*id, Slot::Downloader(i));
        }
    }

    /// Up to `want` distinct peers, never `asking` itself: seeds first, then
    /// downloaders, each drawn at random; downloaders only when `seeds_too`
    /// is false. Seeds first because a client dials the first addresses of a
    /// reply (ours dial at most half their slots): drawn from everyone, a
    /// 16-host deploy left 4 hosts unconnected to its one seed until the
    /// seed's next announce, and those, with almost nothing fresh to pass
    /// on, sent at 76-84 Mbit/s where most others sent 88-95.
    pub fn pick(&self, asking: &PeerId, seeds_too: bool, want: usize) -> Vec<(PeerId, SocketAddr)> {
        let mut picked = Vec::with_capacity(want.min(self.seeds.len() + self.downloaders.len()));
        let (own_seed, own_downloader) = match self.index.get(asking) {
            Some(Slot::Seed(i)) => (Some(*i), None),
            Some(Slot::Downloader(i)) => (None, Some(*i)),
            None => (None, None),
        };
        if seeds_too {
            draw(&self.seeds, own_seed, want, &mut picked);
        }
        draw(
            &self.downloaders,
            own_downloader,
            want - picked.len(),
            &mut picked,
        );
        picked
    }

    fn at(&self, slot: Slot) -> &(PeerId, Peer) {
        match slot {
            Slot::Seed(i) => &self.seeds[i],
            Slot::Downloader(i) => &self.downloaders[i],
        }
    }

    /// Takes the entry at `slot` out of its list (swap-remove), fixing the
    /// index of the entry moved into its place; `index` still holds the
    /// taken id, for the caller to overwrite or remove.
    fn take(&mut self, slot: Slot) -> (PeerId, Peer) {
        let (list, i) = match slot {
            Slot::Seed(i) => (&mut self.seeds, i),
            Slot::Downloader(i) => (&mut self.downloaders, i),
        };
        let entry = list.swap_remove(i);
        if let Some((moved, _)) = list.get(i) {
            let refiled = match slot {
                Slot::Seed(_) => Slot::Seed(i),
                Slot::Downloader(_) => Slot::Downloader(i),
            };
            self.index.insert(*moved, refiled);
        }
        entry
    }
}

/// Appends up to `want` entries of `list` drawn at random, never the one at
/// `own` (the asker's).
fn draw(
    list: &[(PeerId, Peer)],
    own: Option<usize>,
    want: usize,
    out: &mut Vec<(PeerId, SocketAddr)>,
) {
    let range = list.len() - usize::from(own.is_some());
    for i in sample(range, want.min(range)) {
        let i = match own {
            Some(o) if i >= o => i + 1,
            _ => i,
        };
        out.push((list[i].0, list[i].1.addr));
    }
}

/// `k` distinct indices of `0..n`, in random order. Few of many (the usual
/// announce): Floyd's algorithm, O(k²) compares on a small vector; many of
/// few: a partial shuffle of all of them.
fn sample(n: usize, k: usize) -> Vec<usize> {
    if k.saturating_mul(4) >= n {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            let j = fastrand::usize(i..n);
            all.swap(i, j);
        }
        all.truncate(k);
        return all;
    }
    let mut chosen = Vec::with_capacity(k);
    for j in n - k..n {
        let t = fastrand::usize(..=j);
        chosen.push(if chosen.contains(&t) { j } else { t });
    }
    fastrand::shuffle(&mut chosen);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Instant;

    fn peer(left: u64) -> Peer {
        Peer {
            addr: "10.0.0.1:6881".parse().unwrap(),
            from: "10.0.0.1".parse().unwrap(),
            left,
            uploaded: 0,
            downloaded: 0,
            last_seen: Instant::now(),
            counted_complete: false,
            rate: 0.0,
        }
    }

    fn id(n: u16) -> PeerId {
        let mut id = [0u8; 20];
        id[..2].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// Rule: the index names each peer's list and place; seeds are exactly
    /// the peers with nothing left; each source address's count of entries
    /// stays true through every change.
    fn check(set: &PeerSet) {
        assert_eq!(set.index.len(), set.seeds.len() + set.downloaders.len());
        for (i, (pid, p)) in set.seeds.iter().enumerate() {
            assert_eq!(set.index[pid], Slot::Seed(i));
            assert_eq!(p.left, 0);
        }
        for (i, (pid, p)) in set.downloaders.iter().enumerate() {
            assert_eq!(set.index[pid], Slot::Downloader(i));
            assert!(p.left > 0);
        }
        // Each source's count is its entries', none kept at zero.
        let mut counted: HashMap<std::net::IpAddr, usize> = HashMap::new();
        for (_, p) in set.iter() {
            *counted.entry(p.from).or_default() += 1;
        }
        assert_eq!(set.per_source, counted);
    }

    #[test]
    fn peers_are_refiled_when_left_changes_and_the_index_stays_true() {
        let mut set = PeerSet::default();
        for n in 0..50 {
            let from = format!("10.0.0.{}", n % 4).parse().unwrap();
            set.upsert(
                id(n),
                || Peer {
                    from,
                    ..peer(u64::from(n % 3))
                },
                |_| {},
            );
            check(&set);
        }
        for n in (0..50).step_by(2) {
            set.upsert(id(n), || unreachable!(), |p| p.left = 0);
            check(&set);
        }
        for n in (0..50).step_by(5) {
            assert!(set.remove(&id(n)).is_some());
            check(&set);
        }
        assert!(set.remove(&id(0)).is_none());
        set.retain(|p| p.left == 0);
        check(&set);
        assert_eq!(set.downloaders(), 0);
        assert_eq!(set.index.len(), set.seeds());
    }

    #[test]
    fn a_pick_is_distinct_never_the_asker_and_only_downloaders_for_a_seed() {
        let mut set = PeerSet::default();
        for n in 0..300 {
            set.upsert(id(n), || peer(u64::from(n % 2)), |_| {});
        }
        for want in [0, 1, 10, 50, 140, 149, 150, 151, 299, 300, 1000] {
            for asker in [id(0), id(1), id(299), id(9999)] {
                let is_seed = set.get(&asker).is_some_and(|p| p.left == 0);
                let got = set.pick(&asker, !is_seed, want);
                let ids: HashSet<PeerId> = got.iter().map(|(i, _)| *i).collect();
                assert_eq!(ids.len(), got.len(), "distinct");
                assert!(!ids.contains(&asker), "never the asker");
                let present_downloader = set.get(&asker).is_some() && !is_seed;
                let pool = if is_seed {
                    150
                } else {
                    300 - usize::from(present_downloader)
                };
                assert_eq!(got.len(), want.min(pool));
                if is_seed {
                    assert!(ids.iter().all(|i| set.get(i).unwrap().left > 0));
                }
            }
        }
    }

    /// Seeds come first in a reply, so that a client dialling the first
    /// few addresses it is given reaches the release's source.
    #[test]
    fn a_pick_puts_the_seeds_first() {
        let mut set = PeerSet::default();
        for n in 0..40 {
            // Peers 5, 15, 25 and 35 are seeds.
            set.upsert(id(n), || peer(u64::from(n % 10 != 5)), |_| {});
        }
        for _ in 0..50 {
            let got = set.pick(&id(0), true, 8);
            assert_eq!(got.len(), 8);
            assert!(
                got[..4].iter().all(|(i, _)| set.get(i).unwrap().left == 0),
                "seeds first"
            );
            assert!(got[4..].iter().all(|(i, _)| set.get(i).unwrap().left > 0));
        }
        // Fewer wanted than there are seeds: seeds only, drawn at random.
        let mut seen = HashSet::new();
        for _ in 0..100 {
            let got = set.pick(&id(0), true, 2);
            assert!(got.iter().all(|(i, _)| set.get(i).unwrap().left == 0));
            seen.extend(got.into_iter().map(|(i, _)| i));
        }
        assert_eq!(seen.len(), 4);
        // A seed asking is given downloaders only, never itself.
        let got = set.pick(&id(5), false, 100);
        assert_eq!(got.len(), 36);
    }

    #[test]
    fn a_small_pick_reaches_every_peer() {
        let mut set = PeerSet::default();
        for n in 0..100 {
            set.upsert(id(n), || peer(1), |_| {});
        }
        let mut seen = HashSet::new();
        for _ in 0..400 {
            seen.extend(set.pick(&id(0), true, 5).into_iter().map(|(i, _)| i));
        }
        assert_eq!(seen.len(), 99);
    }
}
