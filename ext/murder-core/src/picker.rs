//! The state of every piece and block of one torrent, and the choice of
//! which blocks to ask which peer for. This is the one owner of piece
//! state: `session/STATE.md` lists the states, who moves them and the
//! rules, and every transition below happens under the session's lock on
//! this struct.
//!
//! Who fetches what is what makes a swarm fast: the first pieces are picked
//! at random (so new peers have something to trade at once), then rarest
//! first (so no piece stays scarce), each peer finishes the piece it started
//! (so pieces become shareable quickly), and at the very end a block may be
//! asked of a second peer (endgame) so one slow peer cannot hold up the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::bitfield::Bitfield;
use crate::layout::Layout;
use crate::wire::{BlockRequest, BLOCK};

/// Pieces picked at random before rarest-first takes over.
const RANDOM_FIRST: usize = 4;
/// Most peers asked for the same block in endgame.
const MAX_DUPLICATES: u8 = 2;
/// Copies of each block of a failed piece kept for blame, over its attempts.
const MAX_SUSPECT_ATTEMPTS: usize = 4;
/// The "sender" of blocks that lie wholly in a piece's padding: nobody
/// sends them, they are zeros (connection keys start at 1).
pub const PAD_SOURCE: u64 = 0;

/// One block of a piece being downloaded (rule B1 of STATE.md: a block has
/// at most one accepted writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    /// Nobody is asked for it.
    Missing,
    /// Asked of this many peers.
    Requested(u8),
    /// Accepted from this connection, whose write is under way.
    Writing(u64),
    /// On disk, as sent by this connection.
    Written(u64),
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<Block>,
    written: usize,
    /// Copies of blocks that arrived after another copy was accepted:
    /// (block, SHA-1 of the copy, sender). Checked once the piece passes.
    duplicates: Vec<(usize, [u8; 20], u64)>,
    /// A sender put bytes other than zeros where a pad file lies.
    pad_dirty: bool,
}

/// What became of a block that arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Accept {
    /// Write it now (this connection is its one writer), then call
    /// `written` or `write_failed`. `others_asked`: other peers were asked
    /// for it too (endgame) and should cancel.
    Write { others_asked: bool },
    /// Another copy was accepted already: drop this one (and hand its hash
    /// to `duplicate`, so a liar is still found out).
    Duplicate,
    /// Not a block we want (a piece we have or never started, a bad length).
    Unwanted,
}

/// A piece to verify, with what the verifier needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyJob {
    pub piece: u32,
    pub length: u64,
    /// Bytes of the piece before its trailing padding (zeros on no disk).
    pub data_end: u64,
    /// The hash of each block is needed to blame exactly the bad senders.
    pub block_hashes: bool,
    pub pad_dirty: bool,
}

/// What a verification means for the peers that took part.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Blame {
    /// Proven to have sent bytes that are not the torrent's.
    pub ban: Vec<u64>,
    /// Sent a whole failed piece alone (may be a disk fault: strike first).
    pub strike: Option<u64>,
}

pub struct Picker {
    layout: Layout,
    have: Bitfield,
    /// Pieces fully written and being verified.
    verifying: Bitfield,
    availability: Vec<u32>,
    partial: HashMap<u32, Partial>,
    /// The keys of `partial` as bits, so that a scan for a new piece tests
    /// 64 pieces at a time.
    started: Bitfield,
    /// Started pieces that may still have a block nobody was asked for
    /// (a superset: `take_missing` clears a piece it finds none in). Step 1
    /// of `pick` scans these, 64 at a time, not every piece under way: with
    /// a tree's one-block pieces hundreds are under way and nearly all are
    /// fully requested.
    open: Bitfield,
    /// Failed pieces from several senders: each copy's block, hash and
    /// sender (duplicates too), from every failed attempt (up to
    /// `MAX_SUSPECT_ATTEMPTS` blocks' worth each), kept until the piece passes; then the senders of
    /// copies that differ from the good blocks are banned, and only they.
    suspects: HashMap<u32, Vec<(usize, [u8; 20], u64)>>,
    rng: fastrand::Rng,
    /// Bumped whenever blocks may have become pickable other than by a
    /// peer's announcement (given back, failed, endgame begun): a peer that
    /// found nothing to pick need not look again until then.
    epoch: Arc<AtomicU64>,
    endgame: bool,
}

impl Picker {
    pub fn new(layout: Layout, mut have: Bitfield) -> Self {
        let count = layout.piece_count();
        // A piece wholly in padding is nobody's to send: Have from the start
        // (a torrent whose hash for it is not that of zeros was refused
        // when it was read, `Metainfo::check_pads`).
        for piece in 0..count {
            if layout.data_end(piece) == 0 {
                have.set(piece);
            }
        }
        Picker {
            layout,
            verifying: Bitfield::new(count),
            availability: vec![0; count],
            have,
            partial: HashMap::new(),
            started: Bitfield::new(count),
            open: Bitfield::new(count),
            suspects: HashMap::new(),
            rng: fastrand::Rng::new(),
            epoch: Arc::new(AtomicU64::new(0)),
            endgame: false,
        }
    }

    /// A shared view of the pick epoch (read without the lock).
    pub fn epoch(&self) -> Arc<AtomicU64> {
        self.epoch.clone()
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
    }

    /// Bytes of the pieces held, trailing padding left out (what a host
    /// holds on disk; compare `Layout::data_length`).
    pub fn have_bytes(&self) -> u64 {
        self.have.iter_ones().map(|p| self.layout.data_end(p)).sum()
    }

    pub fn peer_has(&mut self, piece: usize) {
        if let Some(a) = self.availability.get_mut(piece) {
            *a += 1;
        }
    }

    pub fn peer_has_all(&mut self, bits: &Bitfield) {
        for piece in bits.iter_ones() {
            self.peer_has(piece);
        }
    }

    pub fn peer_left(&mut self, bits: &Bitfield) {
        for piece in bits.iter_ones() {
            if let Some(a) = self.availability.get_mut(piece) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// How many connected peers hold `piece`.
    pub fn availability(&self, piece: usize) -> u32 {
        self.availability.get(piece).copied().unwrap_or(0)
    }

    /// Whether every piece is held by some connected peer.
    pub fn swarm_has_all(&self) -> bool {
        self.availability.iter().all(|&a| a > 0)
    }

    /// Pieces we lack that no connected peer holds.
    pub fn orphans(&self) -> usize {
        (0..self.availability.len())
            .filter(|&p| !self.have.get(p) && self.availability[p] == 0)
            .count()
    }

    /// Blocks of `piece`, 16 KiB each from its start; the last may be short.
    fn blocks_in(&self, piece: u32) -> usize {
        let (_, len) = self.layout.piece_range(piece as usize);
        len.div_ceil(BLOCK as u64) as usize
    }

    /// The request for block `block` of `piece`: never beyond the piece's
    /// data (trailing padding is zeros that nobody needs to send, BEP 47);
    /// `None` for a block that is padding only.
    fn request(&self, piece: u32, block: usize) -> Option<BlockRequest> {
        let data_end = self.layout.data_end(piece as usize);
        let offset = block as u64 * BLOCK as u64;
        (offset < data_end).then(|| BlockRequest {
            piece,
            offset: offset as u32,
            length: (data_end - offset).min(BLOCK as u64) as u32,
        })
    }

    fn start_piece(&mut self, piece: u32) {
        let blocks: Vec<Block> = (0..self.blocks_in(piece))
            .map(|b| match self.request(piece, b) {
                Some(_) => Block::Missing,
                None => Block::Written(PAD_SOURCE),
            })
            .collect();
        let written = blocks.iter().filter(|b| **b != Block::Missing).count();
        self.started.set(piece as usize);
        if written < blocks.len() {
            self.open.set(piece as usize);
        }
        self.partial.insert(
            piece,
            Partial {
                blocks,
                written,
                duplicates: Vec::new(),
                pad_dirty: false,
            },
        );
    }

    /// Picks up to `want` blocks from a peer holding `peer_has`, skipping
    /// those in `outstanding` (already asked of this peer).
    pub fn pick(
        &mut self,
        peer_has: &Bitfield,
        want: usize,
        outstanding: &[BlockRequest],
    ) -> Vec<BlockRequest> {
        let mut out = Vec::new();
        // 1. Finish pieces already started.
        for piece in self.open_pieces(peer_has) {
            self.take_missing(piece, want, &mut out);
            if out.len() >= want {
                return out;
            }
        }
        // 2. Start new pieces: random first, then rarest.
        while out.len() < want {
            let Some(piece) = self.choose_new(peer_has) else {
                break;
            };
            self.start_piece(piece);
            self.take_missing(piece, want, &mut out);
        }
        // 3. Endgame: once every piece is done or under way anywhere (not
        //    merely for this peer), ask again what others were asked for and
        //    have not delivered, so one slow peer cannot hold up the end.
        if !self.endgame && self.have.count() + self.partial.len() >= self.availability.len() {
            self.endgame = true;
            self.bump();
        }
        if out.len() < want && self.endgame {
            for piece in self.started_pieces(peer_has) {
                let count = self.partial[&piece].blocks.len();
                for i in 0..count {
                    if out.len() >= want {
                        return out;
                    }
                    let Some(req) = self.request(piece, i) else {
                        continue;
                    };
                    if outstanding.contains(&req) || out.contains(&req) {
                        continue;
                    }
                    let Some(partial) = self.partial.get_mut(&piece) else {
                        continue;
                    };
                    if let Block::Requested(n) = partial.blocks[i] {
                        if n < MAX_DUPLICATES {
                            partial.blocks[i] = Block::Requested(n + 1);
                            out.push(req);
                        }
                    }
                }
            }
        }
        out
    }

    /// Pieces being downloaded, not yet complete, that a peer holding
    /// `peer_has` can help with.
    fn started_pieces(&self, peer_has: &Bitfield) -> Vec<u32> {
        self.scan(&self.started, peer_has)
    }

    /// Started pieces that may have a block nobody was asked for, held by
    /// a peer holding `peer_has`.
    fn open_pieces(&self, peer_has: &Bitfield) -> Vec<u32> {
        self.scan(&self.open, peer_has)
    }

    /// The pieces of `set` that `peer_has` holds and that are not being
    /// verified, in order.
    fn scan(&self, set: &Bitfield, peer_has: &Bitfield) -> Vec<u32> {
        let mut pieces = Vec::new();
        for w in 0..set.len().div_ceil(64) {
            let mut bits = set.word(w) & peer_has.word(w) & !self.verifying.word(w);
            while bits != 0 {
                pieces.push((w * 64) as u32 + bits.trailing_zeros());
                bits &= bits - 1;
            }
        }
        pieces
    }

    fn take_missing(&mut self, piece: u32, want: usize, out: &mut Vec<BlockRequest>) {
        let count = self.blocks_in(piece);
        for i in 0..count {
            if out.len() >= want {
                break;
            }
            let Some(req) = self.request(piece, i) else {
                continue;
            };
            let Some(partial) = self.partial.get_mut(&piece) else {
                return;
            };
            if partial.blocks[i] == Block::Missing {
                partial.blocks[i] = Block::Requested(1);
                out.push(req);
            }
        }
        let still_open = self
            .partial
            .get(&piece)
            .is_some_and(|p| p.blocks.contains(&Block::Missing));
        if !still_open {
            self.open.clear(piece as usize);
        }
    }

    /// A piece to start for a peer holding `peer_has`: one it holds that we
    /// lack and have not started; at random for the first few, then the
    /// rarest (ties go to the first after a random start). This runs once
    /// per piece started: a tree has thousands of one-block pieces, so it
    /// tests 64 pieces per step and compares the availability of
    /// candidates only, stopping at 1 (a piece the peer holds is no rarer).
    fn choose_new(&mut self, peer_has: &Bitfield) -> Option<u32> {
        let count = self.availability.len();
        if count == 0 {
            return None;
        }
        let start = self.rng.usize(..count);
        let random = self.have.count() < RANDOM_FIRST;
        let words = count.div_ceil(64);
        let (first_word, first_bit) = (start / 64, start % 64);
        let mut best: Option<(u32, usize)> = None;
        // Word `first_word` twice: its bits from the start, at the end the rest.
        for i in 0..=words {
            let w = (first_word + i) % words;
            let mut bits = peer_has.word(w)
                & !self.have.word(w)
                & !self.verifying.word(w)
                & !self.started.word(w);
            if i == 0 {
                bits &= !0u64 << first_bit;
            } else if i == words {
                bits &= (1u64 << first_bit) - 1;
            }
            while bits != 0 {
                let p = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if p >= count {
                    break;
                }
                if random {
                    return Some(p as u32);
                }
                let a = self.availability[p];
                if best.is_none_or(|(b, _)| a < b) {
                    best = Some((a, p));
                    if a <= 1 {
                        return Some(p as u32);
                    }
                }
            }
        }
        best.map(|(_, p)| p as u32)
    }

    /// The block `req` arrived from connection `source` (rule B1: the first
    /// copy of a block that is wanted is accepted and the accepting
    /// connection alone writes it; every later copy is dropped unwritten).
    /// `pad_dirty` says the copy has bytes other than zeros where a pad
    /// file lies.
    pub fn accept(&mut self, req: &BlockRequest, source: u64, pad_dirty: bool) -> Accept {
        let index = (req.offset / BLOCK) as usize;
        if req.offset % BLOCK != 0 || self.request(req.piece, index) != Some(*req) {
            return Accept::Unwanted;
        }
        let Some(partial) = self.partial.get_mut(&req.piece) else {
            return Accept::Unwanted;
        };
        match partial.blocks[index] {
            Block::Missing | Block::Requested(_) => {
                let others_asked = matches!(partial.blocks[index], Block::Requested(n) if n > 1);
                partial.blocks[index] = Block::Writing(source);
                partial.pad_dirty |= pad_dirty;
                Accept::Write { others_asked }
            }
            Block::Writing(_) | Block::Written(_) => Accept::Duplicate,
        }
    }

    /// A copy of a block that `accept` called a duplicate, by its hash.
    pub fn duplicate(&mut self, req: &BlockRequest, source: u64, hash: [u8; 20]) {
        if let Some(partial) = self.partial.get_mut(&req.piece) {
            let index = (req.offset / BLOCK) as usize;
            if partial.duplicates.len() < partial.blocks.len() * MAX_DUPLICATES as usize {
                partial.duplicates.push((index, hash, source));
            }
        }
    }

    /// The accepted block `req` is on disk. Only its accepting connection
    /// calls this (after `accept` said `Write`). Returns the piece to verify
    /// when this was its last block.
    pub fn written(&mut self, req: &BlockRequest) -> Option<VerifyJob> {
        let index = (req.offset / BLOCK) as usize;
        let partial = self.partial.get_mut(&req.piece)?;
        let Some(Block::Writing(source)) = partial.blocks.get(index).copied() else {
            return None;
        };
        partial.blocks[index] = Block::Written(source);
        partial.written += 1;
        if partial.written < partial.blocks.len() {
            return None;
        }
        // Rule P2: a piece is verified only once every block is on disk.
        let piece = req.piece;
        self.verifying.set(piece as usize);
        let distinct = {
            let mut senders: Vec<u64> = partial
                .blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Written(s) if *s != PAD_SOURCE => Some(*s),
                    _ => None,
                })
                .collect();
            senders.sort_unstable();
            senders.dedup();
            senders.len()
        };
        let (_, length) = self.layout.piece_range(piece as usize);
        Some(VerifyJob {
            piece,
            length,
            data_end: self.layout.data_end(piece as usize),
            block_hashes: distinct > 1
                || !partial.duplicates.is_empty()
                || self.suspects.contains_key(&piece),
            pad_dirty: partial.pad_dirty,
        })
    }

    /// The write of accepted block `req` failed: it is missing again (the
    /// session fails; this keeps the state true meanwhile).
    pub fn write_failed(&mut self, req: &BlockRequest) {
        if let Some(partial) = self.partial.get_mut(&req.piece) {
            let index = (req.offset / BLOCK) as usize;
            if let Some(b @ Block::Writing(_)) = partial.blocks.get_mut(index) {
                *b = Block::Missing;
                self.open.set(req.piece as usize);
            }
        }
        self.bump();
    }

    /// Gives back blocks a peer was asked for and will not deliver.
    pub fn release(&mut self, requests: &[BlockRequest]) {
        if !requests.is_empty() {
            self.bump();
        }
        for req in requests {
            if let Some(partial) = self.partial.get_mut(&req.piece) {
                let index = (req.offset / BLOCK) as usize;
                if let Some(Block::Requested(n)) = partial.blocks.get(index).copied() {
                    partial.blocks[index] = if n > 1 {
                        Block::Requested(n - 1)
                    } else {
                        self.open.set(req.piece as usize);
                        Block::Missing
                    };
                }
            }
        }
    }

    /// The verifier's verdict on a piece (rule P3: only it sets `have`).
    /// `block_hashes` (when the job asked for them) are of the piece as it
    /// is on disk. Returns who is to blame.
    pub fn verdict(&mut self, piece: u32, ok: bool, block_hashes: &[[u8; 20]]) -> Blame {
        self.verifying.clear(piece as usize);
        let mut blame = Blame::default();
        let Some(partial) = self.partial.remove(&piece) else {
            return blame;
        };
        self.started.clear(piece as usize);
        self.open.clear(piece as usize);
        let senders: Vec<u64> = partial
            .blocks
            .iter()
            .map(|b| match b {
                Block::Written(s) => *s,
                _ => PAD_SOURCE,
            })
            .collect();
        if ok {
            self.have.set(piece as usize);
            let bad_copies = self
                .suspects
                .remove(&piece)
                .unwrap_or_default()
                .into_iter()
                .chain(partial.duplicates);
            for (block, hash, source) in bad_copies {
                let good = block_hashes.get(block);
                if source != PAD_SOURCE && good.is_some_and(|g| *g != hash) {
                    blame.ban.push(source);
                }
            }
            blame.ban.sort_unstable();
            blame.ban.dedup();
            return blame;
        }
        let mut distinct: Vec<u64> = senders
            .iter()
            .copied()
            .filter(|&s| s != PAD_SOURCE)
            .collect();
        distinct.sort_unstable();
        distinct.dedup();
        if let [only] = distinct[..] {
            blame.strike = Some(only);
        } else if block_hashes.len() == senders.len() {
            // Bounded: a piece that fails without end costs no more.
            let room = senders.len() * MAX_SUSPECT_ATTEMPTS;
            let kept = self.suspects.entry(piece).or_default();
            let copies = block_hashes
                .iter()
                .zip(senders)
                .enumerate()
                .map(|(i, (hash, source))| (i, *hash, source))
                .chain(partial.duplicates);
            let space = room.saturating_sub(kept.len());
            kept.extend(copies.take(space));
        }
        self.endgame = false;
        self.bump();
        blame
    }

    /// Whether a peer holding `bits` has anything we still want.
    pub fn interesting(&self, bits: &Bitfield) -> bool {
        bits.has_any_missing_from(&self.have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker(pieces: usize) -> Picker {
        let layout = Layout::new([(pieces as u64 * 32768 - 100, false)], 32768);
        Picker::new(layout, Bitfield::new(pieces))
    }

    fn deliver(p: &mut Picker, req: &BlockRequest, source: u64) -> Option<VerifyJob> {
        assert!(
            matches!(p.accept(req, source, false), Accept::Write { .. }),
            "{req:?}"
        );
        p.written(req)
    }

    #[test]
    fn a_whole_download_with_endgame_and_verification() {
        let mut p = picker(6);
        let all = Bitfield::full(6);
        p.peer_has_all(&all);
        let first = p.pick(&all, 4, &[]);
        assert_eq!(first.len(), 4);
        // Blocks come two per piece: the first pick covers two whole pieces.
        assert_eq!(first[0].piece, first[1].piece);
        let rest = p.pick(&all, 100, &first);
        assert_eq!(
            rest.len(),
            8,
            "remaining 8 blocks, then endgame duplicates up to the cap"
        );
        let dup = p.pick(&all, 100, &[]);
        assert!(!dup.is_empty(), "endgame asks again");
        for req in first.iter().chain(&rest) {
            if let Some(job) = deliver(&mut p, req, 1) {
                assert!(!job.block_hashes, "one sender");
                assert_eq!(p.verdict(job.piece, true, &[]), Blame::default());
            }
        }
        assert!(p.is_complete());
        assert_eq!(p.accept(&dup[0], 2, false), Accept::Unwanted);
        // The last block is short.
        assert!(rest.iter().chain(&first).any(|r| r.length == 16384 - 100));
    }

    /// A piece wholly in a pad file (BEP 47) holds no data anybody sends:
    /// it is Have from the start (the torrent was refused unless its hash
    /// is that of zeros), or the download would never complete.
    #[test]
    fn a_piece_wholly_in_padding_is_had_from_the_start() {
        let layout = Layout::new([(16384, false), (16384, true), (100, false)], 16384);
        let mut p = Picker::new(layout, Bitfield::new(3));
        let all = Bitfield::full(3);
        p.peer_has_all(&all);
        for req in p.pick(&all, 8, &[]) {
            assert_ne!(req.piece, 1, "nobody sends padding");
            if let Some(job) = deliver(&mut p, &req, 1) {
                p.verdict(job.piece, true, &[]);
            }
        }
        assert!(p.is_complete());
    }

    /// Rule B1: a second copy of a block is never written, and once the
    /// piece passes a copy that differed bans its sender.
    #[test]
    fn rule_b1_one_writer_per_block_and_lying_copies_are_found_out() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        p.peer_has_all(&all);
        let reqs = p.pick(&all, 10, &[]);
        assert_eq!(
            p.accept(&reqs[0], 1, false),
            Accept::Write {
                others_asked: false
            }
        );
        assert_eq!(
            p.accept(&reqs[0], 2, false),
            Accept::Duplicate,
            "still being written"
        );
        p.duplicate(&reqs[0], 2, [9; 20]);
        assert!(p.written(&reqs[0]).is_none());
        assert_eq!(p.accept(&reqs[0], 3, false), Accept::Duplicate, "written");
        p.duplicate(&reqs[0], 3, [1; 20]);
        let job = deliver(&mut p, &reqs[1], 1).expect("complete");
        assert!(job.block_hashes, "duplicates are checked");
        let blame = p.verdict(0, true, &[[1; 20], [2; 20]]);
        assert_eq!(blame.ban, vec![2], "only the copy that differs");
    }

    #[test]
    fn failed_pieces_are_fetched_again_and_blame_their_sources() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let reqs = p.pick(&all, 10, &[]);
        deliver(&mut p, &reqs[0], 7);
        let job = deliver(&mut p, &reqs[1], 7).unwrap();
        assert!(!job.block_hashes);
        assert_eq!(p.verdict(0, false, &[]).strike, Some(7));
        // Fetched again, now from two peers: the liar is banned once it passes.
        let again = p.pick(&all, 10, &[]);
        assert_eq!(again.len(), 2);
        deliver(&mut p, &again[0], 7);
        let job = deliver(&mut p, &again[1], 8).unwrap();
        assert!(job.block_hashes);
        assert_eq!(p.verdict(0, false, &[[6; 20], [2; 20]]), Blame::default());
        let third = p.pick(&all, 10, &[]);
        deliver(&mut p, &third[0], 9);
        let job = deliver(&mut p, &third[1], 9).unwrap();
        assert!(job.block_hashes, "suspects wait for the good copy");
        assert_eq!(p.verdict(0, true, &[[1; 20], [2; 20]]).ban, vec![7]);
    }

    /// Blame across failed attempts: the copies of every failed attempt
    /// count when the piece passes (a second failure replaced the first's,
    /// and its liar went free).
    #[test]
    fn liars_of_every_failed_attempt_are_banned_once_the_piece_passes() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let first = p.pick(&all, 10, &[]);
        deliver(&mut p, &first[0], 7); // liar 7
        deliver(&mut p, &first[1], 8);
        assert_eq!(p.verdict(0, false, &[[6; 20], [2; 20]]), Blame::default());
        let second = p.pick(&all, 10, &[]);
        deliver(&mut p, &second[0], 9);
        deliver(&mut p, &second[1], 10); // liar 10
        assert_eq!(p.verdict(0, false, &[[1; 20], [5; 20]]), Blame::default());
        let third = p.pick(&all, 10, &[]);
        deliver(&mut p, &third[0], 11);
        let job = deliver(&mut p, &third[1], 11).unwrap();
        assert!(job.block_hashes);
        assert_eq!(p.verdict(0, true, &[[1; 20], [2; 20]]).ban, vec![7, 10]);
    }

    #[test]
    fn rarest_first_scan_finds_the_rarest_candidate_across_words() {
        // 200 pieces span four words; the scan starts at random each time,
        // so run it often and compare with a plain search over every piece.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..300 {
            let mut p = picker(200);
            for piece in 0..RANDOM_FIRST {
                p.have.set(piece);
            }
            for _ in 0..rng.usize(1..6) {
                let mut holder = Bitfield::new(200);
                (0..200).filter(|_| rng.bool()).for_each(|i| {
                    holder.set(i);
                });
                p.peer_has_all(&holder);
            }
            let mut peer = Bitfield::new(200);
            (0..200).filter(|_| rng.u8(..4) == 0).for_each(|i| {
                peer.set(i);
            });
            // Some candidates started already (held back for another peer).
            for piece in peer.iter_ones().filter(|_| rng.bool()).collect::<Vec<_>>() {
                p.start_piece(piece as u32);
            }
            let candidates: Vec<usize> = (0..200)
                .filter(|&i| peer.get(i) && !p.have.get(i) && !p.partial.contains_key(&(i as u32)))
                .collect();
            let rarest = candidates.iter().map(|&i| p.availability(i)).min();
            let chosen = p.choose_new(&peer).map(|c| c as usize);
            assert_eq!(chosen.is_some(), rarest.is_some());
            if let Some(c) = chosen {
                assert!(candidates.contains(&c), "{c} is not a candidate");
                let a = p.availability(c);
                assert!(
                    a == rarest.unwrap() || a <= 1,
                    "{c}: {a} against {rarest:?}"
                );
            }
        }
    }

    #[test]
    fn released_blocks_go_to_the_next_peer_and_rare_pieces_go_first() {
        let mut p = picker(8);
        for piece in 0..RANDOM_FIRST {
            p.have.set(piece);
        }
        let mut common = Bitfield::full(8);
        p.peer_has_all(&common);
        p.peer_has_all(&common);
        let mut rare = Bitfield::new(8);
        rare.set(6);
        p.peer_has_all(&rare);
        common.clear(6);
        // Piece 6 is held by 3 peers, the others by 2: piece 4, 5 or 7 first.
        let pick = p.pick(&Bitfield::full(8), 2, &[]);
        assert_ne!(pick[0].piece, 6);
        p.release(&pick);
        let again = p.pick(&Bitfield::full(8), 2, &[]);
        assert_eq!(again, pick, "released blocks are handed out again");
        assert!(p.swarm_has_all());
    }

    /// Rule B2: a block made Missing again (given back, or its write
    /// failed) is picked again; a fully requested piece is not scanned.
    #[test]
    fn rule_b2_a_block_given_back_is_picked_again() {
        let mut p = picker(4);
        let all = Bitfield::full(4);
        p.peer_has_all(&all);
        // Two blocks of each of two pieces: both pieces fully requested.
        let mut asked = p.pick(&all, 4, &[]);
        assert_eq!(asked.len(), 4);
        assert_eq!(
            p.open.iter_ones().count(),
            0,
            "no piece has a Missing block"
        );
        // Given back: that block, and only it, goes out again.
        let back = asked.pop().unwrap();
        p.release(&[back]);
        assert_eq!(p.pick(&all, 1, &[]), vec![back]);
        // A failed write makes its block Missing: picked again too.
        let first = asked[0];
        assert!(matches!(p.accept(&first, 7, false), Accept::Write { .. }));
        p.write_failed(&first);
        assert_eq!(p.pick(&all, 1, &[]), vec![first]);
        // Nothing else of the started pieces is left: the next pick starts
        // a new piece.
        let next = p.pick(&all, 1, &[]);
        assert!(!asked.iter().any(|r| r.piece == next[0].piece));
    }

    /// BEP 47: trailing padding is never asked for.
    #[test]
    fn padding_at_the_end_of_a_piece_is_not_requested() {
        // A 20,000-byte file padded to 64 KiB, then a 1-byte file.
        let layout = Layout::new(
            [(20_000, false), (65_536 - 20_000, true), (1, false)],
            65_536,
        );
        let mut p = Picker::new(layout, Bitfield::new(2));
        let all = Bitfield::full(2);
        let mut reqs = p.pick(&all, 10, &[]);
        reqs.sort_by_key(|r| (r.piece, r.offset));
        assert_eq!(
            reqs.iter()
                .map(|r| (r.piece, r.offset, r.length))
                .collect::<Vec<_>>(),
            vec![(0, 0, 16384), (0, 16384, 20_000 - 16384), (1, 0, 1)]
        );
        let job = deliver(&mut p, &reqs[0], 1);
        assert!(job.is_none());
        let job = deliver(&mut p, &reqs[1], 1).unwrap();
        assert_eq!((job.length, job.data_end), (65_536, 20_000));
    }
}
