//! What a seed sends to whom: the heart of a fast swarm. Every host needs
//! the whole release through a link as fast as the seed's, so the seed's
//! uplink must carry each piece once and the downloaders must carry the
//! rest among themselves. A steering seed (like BEP 16 super-seeding, which
//! standard clients follow without knowing it) shows each downloader only a
//! few pieces at a time, always pieces nobody has yet, and feeds only a few
//! downloaders at once, taking turns: a piece sent at an eighth of the
//! seed's rate reaches its first holder soon and can spread from there,
//! where a piece sent to every downloader at once would crawl to all of
//! them. When the downloaders it feeds take less than it can send (their
//! links are busy with each other), the next in line gets a turn too.
//! A piece is sent a second time only once every piece has left and the
//! seed has nothing else to do: then it helps with the rarest pieces, and
//! sends again a piece that has not arrived anywhere for a while (its taker
//! may be slow or gone).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::bitfield::Bitfield;
use crate::picker::Picker;

/// Downloaders the seed feeds at once.
const SLOTS: usize = 8;
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
    /// Pieces never offered to anyone.
    unsent: usize,
    /// Turns in a row that ended with nothing to offer (see `offer`).
    empty_turns: usize,
}

impl State {
    /// Takes `key` out of the line. An empty line starts the count of empty
    /// turns afresh: the next line to form is woken once round as well.
    fn leave_line(&mut self, key: u64) {
        self.waiting.retain(|&k| k != key);
        if self.waiting.is_empty() {
            self.empty_turns = 0;
        }
    }
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
                unsent: piece_count,
                empty_turns: 0,
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

    /// Piece bytes that left (or will not). Returns whether the seed just
    /// ran out of work while downloaders wait for a turn (the session
    /// should tell them: an idle seed feeds one more).
    pub(super) fn dequeued(&self, bytes: u64) -> bool {
        // Saturating: a racing decrement must not wrap the counter.
        let before = self
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            })
            .unwrap_or(0);
        let after = before.saturating_sub(bytes);
        before >= self.piece_length && after < self.piece_length && !self.state().waiting.is_empty()
    }

    fn idle(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) < self.piece_length
    }

    /// Offers downloader `key` (holding `peer_has`, already offered
    /// `offered`) up to `want` more pieces, if it is its turn. `peers` is
    /// how many peers are connected (their pieces are counted in `picker`).
    pub(super) fn offer(
        &self,
        key: u64,
        peer_has: &Bitfield,
        offered: &Bitfield,
        want: usize,
        picker: &Picker,
        peers: usize,
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
            // An idle seed feeds one more: its turn holders are taking
            // less than it can send (their links are busy with each other).
            let room = state.turns.len() < SLOTS || idle;
            if !room || !first_in_line {
                if !state.waiting.contains(&key) {
                    state.waiting.push_back(key);
                }
                return offer;
            }
            state.leave_line(key);
            state.turns.insert(key, 0);
        }
        // A piece leaves twice only once every piece has left once and the
        // seed has nothing else to do. A piece every connected peer holds
        // already (reused from an earlier release) need not leave at all:
        // waiting for it would keep the pieces they lack from a late host.
        let count = state.offers.len();
        let peers = u32::try_from(peers).unwrap_or(u32::MAX);
        let first_pass_done = state.unsent == 0
            || !(0..count).any(|p| state.offered_at[p].is_none() && picker.availability(p) < peers);
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
                    // Sent before: whoever got it passes it on. After the
                    // first pass, a piece no connected peer holds goes again
                    // unless it is on its way to one (only the seed can
                    // give it), and an idle seed helps with the rarest.
                    if !first_pass_done {
                        continue;
                    }
                    let recent = state.offered_at[p].is_some_and(|t| now - t < REOFFER_AFTER);
                    let held = holders > 0;
                    if (held && !idle) || (!held && recent) {
                        continue;
                    }
                }
                let rank = (holders, state.offers[p]);
                if best.is_none_or(|(b, _)| rank < b) {
                    best = Some((rank, p));
                    if rank == (0, 0) {
                        // Nothing ranks lower (and ties go to the first
                        // found): no need to scan a tree's thousands of
                        // pieces for each one offered.
                        break;
                    }
                }
            }
            let Some((_, p)) = best else { break };
            if state.offered_at[p].is_none() {
                state.unsent -= 1;
            }
            state.offers[p] += 1;
            state.offered_at[p] = Some(now);
            offer.pieces.push(p);
        }
        let turn_pieces = (TURN_BYTES / self.piece_length).max(1) as usize;
        let given = state.turns.get(&key).copied().unwrap_or(0) + offer.pieces.len();
        // Counted only while someone waits: empty turns before that woke
        // no one, and counting them left a line formed later unwoken.
        if offer.pieces.is_empty() {
            if !state.waiting.is_empty() {
                state.empty_turns += 1;
            }
        } else {
            state.empty_turns = 0;
        }
        if (given >= turn_pieces || offer.pieces.is_empty()) && !state.waiting.is_empty() {
            // Turn over: the next in line gets it; this peer queues again.
            state.turns.remove(&key);
            state.waiting.push_back(key);
            // Wake the line, but for empty turns only once round it: past
            // that nothing anyone could be offered changed, and what
            // changes it (a piece arriving somewhere, the seed going idle)
            // brings each peer back here on its own.
            offer.turn_freed = state.empty_turns <= state.waiting.len();
        } else {
            state.turns.insert(key, given);
        }
        offer
    }

    /// Downloader `key` wants no more pieces now (it has a window's worth
    /// on offer that it has not asked for): first in line, where only the
    /// first may take a turn, it leaves the line, and queues again at the
    /// back when it next wants (rule T2 of STATE.md). Further back it keeps
    /// its place (it will most likely have asked by the time it is first).
    /// Returns whether it left while others wait (the session should tell
    /// them).
    pub(super) fn pause(&self, key: u64) -> bool {
        let mut state = self.state();
        if state.waiting.front() != Some(&key) {
            return false;
        }
        state.leave_line(key);
        !state.waiting.is_empty()
    }

    /// Downloader `key` needs nothing more from the seed (it left, or it is
    /// complete); `unheld` are the pieces it was offered and does not hold,
    /// `held` those it holds. A piece whose only offer is undone counts as
    /// never sent again, so the first pass is not over before it left (rule
    /// T1 of STATE.md); one that arrived is no longer on its way anywhere.
    pub(super) fn forget(
        &self,
        key: u64,
        unheld: impl Iterator<Item = usize>,
        held: impl Iterator<Item = usize>,
    ) -> bool {
        let mut state = self.state();
        let arrived = Instant::now().checked_sub(REOFFER_AFTER);
        for p in held {
            if let (Some(Some(at)), Some(arrived)) = (state.offered_at.get_mut(p), arrived) {
                *at = (*at).min(arrived);
            }
        }
        for p in unheld {
            let Some(n) = state.offers.get_mut(p) else {
                continue;
            };
            if *n == 0 {
                continue;
            }
            *n -= 1;
            if *n == 0 && state.offered_at[p].is_some() {
                state.offered_at[p] = None;
                state.unsent += 1;
            }
        }
        state.leave_line(key);
        state.turns.remove(&key).is_some() && !state.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;

    fn seed_picker(pieces: usize) -> Picker {
        let layout = Layout::new([(pieces as u64 * 262_144, false)], 262_144);
        Picker::new(layout, Bitfield::full(pieces))
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
            let offer = steering.offer(key as u64, &none, &offered[key], 2, &picker, 1);
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
        steering.queued(64 << 20); // busy: no extra turns
        for key in 0..SLOTS as u64 {
            assert!(!steering
                .offer(key, &none, &empty, 1, &picker, 1)
                .pieces
                .is_empty());
        }
        let late = SLOTS as u64;
        assert!(
            steering
                .offer(late, &none, &empty, 1, &picker, 1)
                .pieces
                .is_empty(),
            "waits"
        );
        // The first fed finishes its turn (4 pieces of 256 KiB) and yields.
        let mut freed = false;
        for _ in 0..3 {
            freed |= steering.offer(0, &none, &empty, 1, &picker, 1).turn_freed;
        }
        assert!(freed);
        assert!(!steering
            .offer(late, &none, &empty, 1, &picker, 1)
            .pieces
            .is_empty());
        // A peer that leaves gives its turn and its unheld offers back.
        assert!(steering.forget(1, [0usize].into_iter(), std::iter::empty()));
    }

    #[test]
    fn an_idle_seed_feeds_one_more_and_says_when_it_runs_dry() {
        let picker = seed_picker(64);
        let steering = Steering::new(64, 262_144);
        let none = Bitfield::new(64);
        let empty = Bitfield::new(64);
        steering.queued(1 << 20);
        for key in 0..SLOTS as u64 {
            steering.offer(key, &none, &empty, 1, &picker, 1);
        }
        let late = SLOTS as u64;
        assert!(steering
            .offer(late, &none, &empty, 1, &picker, 1)
            .pieces
            .is_empty());
        // The fed peers' requests drain: the waiting peer must hear of it.
        assert!(!steering.dequeued(512 << 10), "still busy");
        assert!(steering.dequeued(512 << 10), "ran dry with a peer waiting");
        assert!(!steering
            .offer(late, &none, &empty, 1, &picker, 1)
            .pieces
            .is_empty());
    }

    #[test]
    fn an_idle_seed_sends_nothing_twice_until_every_piece_left() {
        let picker = seed_picker(4);
        let steering = Steering::new(4, 262_144);
        let none = Bitfield::new(4);
        let mut first = Bitfield::new(4);
        for p in steering.offer(1, &none, &first, 2, &picker, 1).pieces {
            first.set(p);
        }
        // Offers made long enough ago that a piece may be offered again.
        let age_offers = || {
            let past = Instant::now() - 2 * REOFFER_AFTER;
            let mut state = steering.state();
            state
                .offered_at
                .iter_mut()
                .flatten()
                .for_each(|t| *t = past);
        };
        age_offers();
        let second = steering.offer(2, &none, &Bitfield::new(4), 4, &picker, 1);
        assert_eq!(second.pieces.len(), 2, "only the two never sent");
        assert!(second.pieces.iter().all(|&p| !first.get(p)));
        age_offers();
        let third = steering.offer(3, &none, &Bitfield::new(4), 4, &picker, 1);
        assert_eq!(
            third.pieces.len(),
            4,
            "every piece left: an idle seed helps"
        );
    }

    /// Rule T1: an offer a peer took away with it when it left is undone,
    /// and the piece counts as never sent: no piece goes out twice while
    /// that one has not gone out once.
    #[test]
    fn rule_t1_an_undone_offer_reopens_the_first_pass() {
        let picker = seed_picker(2);
        let steering = Steering::new(2, 262_144);
        let none = Bitfield::new(2);
        let first = steering.offer(1, &none, &Bitfield::new(2), 2, &picker, 1);
        assert_eq!(first.pieces.len(), 2);
        // Peer 1 leaves holding one piece but not the other, b.
        let b = first.pieces[1];
        assert!(!steering.forget(1, [b].into_iter(), std::iter::empty()));
        age_offers(&steering);
        let next = steering.offer(2, &none, &Bitfield::new(2), 2, &picker, 1);
        assert_eq!(
            next.pieces,
            vec![b],
            "b has not left yet, so a is not sent twice"
        );
    }

    #[test]
    fn rule_t1_pieces_every_peer_holds_do_not_hold_back_the_second_pass() {
        let mut picker = seed_picker(4);
        let steering = Steering::new(4, 262_144);
        // Each downloader holds pieces 0 and 1 already (an earlier release).
        let mut held = Bitfield::new(4);
        held.set(0);
        held.set(1);
        picker.peer_has_all(&held);
        let first = steering.offer(1, &held, &Bitfield::new(4), 2, &picker, 1);
        assert_eq!(sorted(first.pieces), vec![2, 3]);
        // It completes and leaves; the next host holds the same.
        steering.forget(1, std::iter::empty(), std::iter::empty());
        picker.peer_left(&Bitfield::full(4));
        picker.peer_has_all(&held);
        age_offers(&steering);
        let next = steering.offer(2, &held, &Bitfield::new(4), 2, &picker, 1);
        assert_eq!(
            sorted(next.pieces),
            vec![2, 3],
            "0 and 1 need not leave before 2 and 3 leave again"
        );
    }

    /// Makes every offer older than `REOFFER_AFTER`.
    fn age_offers(steering: &Steering) {
        let past = Instant::now() - 2 * REOFFER_AFTER;
        steering
            .state()
            .offered_at
            .iter_mut()
            .flatten()
            .for_each(|t| *t = past);
    }

    fn sorted(mut pieces: Vec<usize>) -> Vec<usize> {
        pieces.sort_unstable();
        pieces
    }

    #[test]
    fn rule_t1_after_the_first_pass_a_piece_only_the_seed_holds_goes_again_at_once() {
        let mut picker = seed_picker(2);
        let steering = Steering::new(2, 262_144);
        let none = Bitfield::new(2);
        let first = steering.offer(1, &none, &Bitfield::new(2), 2, &picker, 1);
        assert_eq!(first.pieces.len(), 2);
        // Peer 1 gets both and leaves at once; a second arrives while the
        // seed is still busy sending to others.
        picker.peer_has_all(&Bitfield::full(2));
        picker.peer_left(&Bitfield::full(2));
        steering.forget(1, std::iter::empty(), first.pieces.iter().copied());
        steering.queued(1 << 20);
        let next = steering.offer(2, &none, &Bitfield::new(2), 2, &picker, 1);
        assert_eq!(sorted(next.pieces), vec![0, 1], "nobody else can give them");
    }

    #[test]
    fn a_busy_seed_does_not_send_a_piece_twice() {
        let picker = seed_picker(2);
        let steering = Steering::new(2, 262_144);
        let none = Bitfield::new(2);
        let a = steering.offer(1, &none, &Bitfield::new(2), 2, &picker, 1);
        assert_eq!(a.pieces.len(), 2);
        steering.queued(1 << 20);
        let b = steering.offer(2, &none, &Bitfield::new(2), 2, &picker, 1);
        assert!(b.pieces.is_empty(), "both pieces are in flight to peer 1");
    }

    /// An empty turn wakes the line once round, not for ever: once every
    /// piece has left and the ones downloaders lack are held by others
    /// (the seed busy), each peer first in line was offered nothing, handed
    /// its turn on and woke every peer again: bench/swarm's seed counted
    /// 16,599 such handovers in 1.3 s of a 16-host run, every one a wake-up
    /// of all its connections on the shared cores.
    #[test]
    fn empty_turns_wake_the_line_once_round_not_for_ever() {
        let mut picker = seed_picker(4);
        picker.peer_has_all(&Bitfield::full(4)); // every piece held by someone
        let steering = Steering::new(4, 262_144);
        steering.queued(1 << 30); // busy: held pieces are not sent again
        let none = Bitfield::new(4);
        // Peer 1 takes every piece once; peers 2-8 take the other turns,
        // 9 and 10 wait.
        assert_eq!(
            steering.offer(1, &none, &none, 4, &picker, 10).pieces.len(),
            4
        );
        let mut wake_ups = 0;
        for key in 2..=10 {
            let offer = steering.offer(key, &none, &none, 4, &picker, 10);
            assert!(offer.pieces.is_empty());
            wake_ups += usize::from(offer.turn_freed);
        }
        for _ in 0..20 {
            for key in 1..=10 {
                let offer = steering.offer(key, &none, &none, 4, &picker, 10);
                assert!(offer.pieces.is_empty());
                wake_ups += usize::from(offer.turn_freed);
            }
        }
        assert!(
            (1..=10).contains(&wake_ups),
            "{wake_ups} wake-ups for nothing to offer (none: the line stalls)"
        );
        // The line empties (every waiting peer left), and a new one forms
        // (eight take the turns, two wait): it is woken too, not held to
        // the old line's count of empty turns.
        let waiting: Vec<u64> = steering.state().waiting.iter().copied().collect();
        for key in waiting {
            steering.forget(key, std::iter::empty(), std::iter::empty());
        }
        let mut woken = 0;
        for _ in 0..3 {
            for key in 11..=20 {
                let offer = steering.offer(key, &none, &none, 4, &picker, 10);
                woken += usize::from(offer.turn_freed);
            }
        }
        assert!(
            woken >= 1,
            "a line formed after an empty one was never woken"
        );
    }
}
