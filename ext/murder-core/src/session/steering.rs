//! What a seed sends to whom: the heart of a fast swarm. Every host needs
//! the whole release through a link as fast as the seed's, so the seed's
//! uplink must carry each piece once and the downloaders must carry the
//! rest among themselves. A steering seed (like BEP 16 super-seeding, which
//! standard clients follow without knowing it) shows each downloader only a
//! few pieces at a time, always pieces nobody has yet, and feeds only a few
//! downloaders at once, taking turns: a piece sent at a quarter of the
//! seed's rate reaches its first holder soon and can spread from there,
//! where a piece sent to every downloader at once would crawl to all of
//! them. A piece is sent a second time only when the seed has nothing else
//! to do: then it helps with the rarest pieces, and sends again a piece that
//! has not arrived anywhere for a while (its taker may be slow or gone).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::picker::Picker;

/// Downloaders the seed feeds at once.
const SLOTS: usize = 4;
/// Bytes of pieces a downloader is offered per turn while others wait.
const TURN_BYTES: u64 = 1 << 20;
/// A piece offered this recently is not offered again, even to an idle seed.
const REOFFER_AFTER: Duration = Duration::from_secs(1);

pub(super) struct Steering {
    state: Mutex<State>,
    /// Piece bytes peers asked us for that no socket has taken yet.
    backlog: AtomicU64,
    piece_length: u64,
}

struct State {
    /// How often each piece was offered, counting only offers still open
    /// or taken up (offers to a peer that left without the piece are undone).
    offers: Vec<u32>,
    offered_at: Vec<Option<Instant>>,
    /// Downloaders being fed now, with the pieces offered in this turn.
    turns: HashMap<u64, usize>,
    /// Downloaders waiting for a turn, first come first served.
    waiting: VecDeque<u64>,
}

/// Pieces to offer one downloader, and whether a turn came free (the
/// session should tell waiting peers).
pub(super) struct Offer {
    pub pieces: Vec<usize>,
    pub turn_freed: bool,
}

impl Steering {
    pub(super) fn new(piece_count: usize, piece_length: u64) -> Self {
        Steering {
            state: Mutex::new(State {
                offers: vec![0; piece_count],
                offered_at: vec![None; piece_count],
                turns: HashMap::new(),
                waiting: VecDeque::new(),
            }),
            backlog: AtomicU64::new(0),
            piece_length: piece_length.max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn queued(&self, bytes: u64) {
        self.backlog.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(super) fn dequeued(&self, bytes: u64) {
        // Saturating: a racing decrement must not wrap the counter.
        let _ = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    fn idle(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) < self.piece_length
    }

    /// Offers downloader `key` (holding `peer_has`, already offered
    /// `offered`) up to `want` more pieces, if it is its turn. `sole` says it
    /// is the only downloader, which may then take more at once.
    pub(super) fn offer(
        &self,
        key: u64,
        peer_has: &Bitfield,
        offered: &Bitfield,
        want: usize,
        picker: &Picker,
    ) -> Offer {
        let idle = self.idle();
        let now = Instant::now();
        let mut state = self.state();
        let mut offer = Offer {
            pieces: Vec::new(),
            turn_freed: false,
        };
        if want == 0 {
            return offer;
        }
        if !state.turns.contains_key(&key) {
            let first_in_line = state.waiting.front().is_none_or(|&k| k == key);
            if state.turns.len() >= SLOTS || !first_in_line {
                if !state.waiting.contains(&key) {
                    state.waiting.push_back(key);
                }
                return offer;
            }
            state.waiting.retain(|&k| k != key);
            state.turns.insert(key, 0);
        }
        let count = state.offers.len();
        let start = fastrand::usize(..count.max(1));
        while offer.pieces.len() < want {
            let mut best: Option<((u32, u32), usize)> = None;
            for i in 0..count {
                let p = (start + i) % count;
                if peer_has.get(p) || offered.get(p) || offer.pieces.contains(&p) {
                    continue;
                }
                let holders = picker.availability(p);
                if state.offers[p] > 0 {
                    // Sent before: whoever got it passes it on. An idle
                    // seed helps with the rarest pieces, and sends again a
                    // piece that has not arrived anywhere for a while.
                    let recent = state.offered_at[p].is_some_and(|t| now - t < REOFFER_AFTER);
                    if !idle || (holders == 0 && recent) {
                        continue;
                    }
                }
                let rank = (holders, state.offers[p]);
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, p));
                }
            }
            let Some((_, p)) = best else { break };
            state.offers[p] += 1;
            state.offered_at[p] = Some(now);
            offer.pieces.push(p);
        }
        let turn_pieces = (TURN_BYTES / self.piece_length).max(1) as usize;
        let given = state.turns.get(&key).copied().unwrap_or(0) + offer.pieces.len();
        if (given >= turn_pieces || offer.pieces.is_empty()) && !state.waiting.is_empty() {
            // Turn over: the next in line gets it; this peer queues again.
            state.turns.remove(&key);
            state.waiting.push_back(key);
            offer.turn_freed = true;
        } else {
            state.turns.insert(key, given);
        }
        offer
    }

    /// Downloader `key` needs nothing more from the seed (it left, or it is
    /// complete); `unheld` are the pieces it was offered and does not hold.
    pub(super) fn forget(&self, key: u64, unheld: impl Iterator<Item = usize>) -> bool {
        let mut state = self.state();
        for p in unheld {
            if let Some(n) = state.offers.get_mut(p) {
                *n = n.saturating_sub(1);
            }
        }
        state.waiting.retain(|&k| k != key);
        state.turns.remove(&key).is_some() && !state.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::metainfo::FileEntry;

    fn seed_picker(pieces: usize) -> Picker {
        let files = [FileEntry {
            path: vec!["f".into()],
            length: pieces as u64 * 262_144,
            pad: false,
        }];
        Picker::new(Layout::new(&files, 262_144), Bitfield::full(pieces))
    }

    #[test]
    fn every_piece_is_offered_once_before_any_twice() {
        let picker = seed_picker(64);
        let steering = Steering::new(64, 262_144);
        let none = Bitfield::new(64);
        let mut offered: Vec<Bitfield> = (0..3).map(|_| Bitfield::new(64)).collect();
        let mut seen = vec![0; 64];
        for round in 0..100 {
            let key = round % 3;
            let offer = steering.offer(key as u64, &none, &offered[key], 2, &picker);
            for p in offer.pieces {
                offered[key].set(p);
                seen[p] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn downloaders_take_turns_beyond_the_slots() {
        let picker = seed_picker(64);
        let steering = Steering::new(64, 262_144);
        let none = Bitfield::new(64);
        let empty = Bitfield::new(64);
        for key in 0..SLOTS as u64 {
            assert!(!steering
                .offer(key, &none, &empty, 1, &picker)
                .pieces
                .is_empty());
        }
        let late = SLOTS as u64;
        assert!(
            steering
                .offer(late, &none, &empty, 1, &picker)
                .pieces
                .is_empty(),
            "waits"
        );
        // The first fed finishes its turn (4 pieces of 256 KiB) and yields.
        let mut freed = false;
        for _ in 0..3 {
            freed |= steering.offer(0, &none, &empty, 1, &picker).turn_freed;
        }
        assert!(freed);
        assert!(!steering
            .offer(late, &none, &empty, 1, &picker)
            .pieces
            .is_empty());
        // A peer that leaves gives its turn and its unheld offers back.
        assert!(steering.forget(1, [0usize].into_iter()));
    }

    #[test]
    fn a_busy_seed_does_not_send_a_piece_twice() {
        let picker = seed_picker(2);
        let steering = Steering::new(2, 262_144);
        let none = Bitfield::new(2);
        let a = steering.offer(1, &none, &Bitfield::new(2), 2, &picker);
        assert_eq!(a.pieces.len(), 2);
        steering.queued(1 << 20);
        let b = steering.offer(2, &none, &Bitfield::new(2), 2, &picker);
        assert!(b.pieces.is_empty(), "both pieces are in flight to peer 1");
    }
}
