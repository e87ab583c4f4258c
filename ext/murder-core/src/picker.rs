//! Which blocks to ask which peer for. Who fetches what is what makes a
//! swarm fast: the first pieces are picked at random (so new peers have
//! something to trade at once), then rarest first (so no piece stays scarce),
//! each peer finishes the piece it started (so pieces become shareable
//! quickly), and at the very end a block may be asked of a second peer
//! (endgame) so one slow peer cannot hold up the last percent.

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Missing,
    Requested(u8),
    Received,
}

#[derive(Debug)]
struct Partial {
    blocks: Vec<Block>,
    received: usize,
    /// The connection that sent each block (blamed if the piece fails).
    sources: Vec<u64>,
}

/// What became of a block that arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New data; `true` when it completed the piece (verify it now).
    New {
        piece_complete: bool,
        others_asked: bool,
    },
    /// Already had it (endgame duplicate, or a late answer).
    Unwanted,
}

pub struct Picker {
    layout: Layout,
    have: Bitfield,
    /// Pieces fully received and being verified.
    verifying: Bitfield,
    availability: Vec<u32>,
    partial: HashMap<u32, Partial>,
    rng: fastrand::Rng,
    /// Bumped whenever blocks may have become pickable other than by a
    /// peer's announcement (given back, failed, endgame begun): a peer that
    /// found nothing to pick need not look again until then.
    epoch: Arc<AtomicU64>,
    endgame: bool,
}

impl Picker {
    pub fn new(layout: Layout, have: Bitfield) -> Self {
        let count = layout.piece_count();
        Picker {
            layout,
            verifying: Bitfield::new(count),
            availability: vec![0; count],
            have,
            partial: HashMap::new(),
            rng: fastrand::Rng::new(),
            epoch: Arc::new(AtomicU64::new(0)),
            endgame: false,
        }
    }

    /// A shared view of the pick epoch (read without the picker's lock).
    pub fn epoch(&self) -> Arc<AtomicU64> {
        self.epoch.clone()
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    pub fn is_complete(&self) -> bool {
        self.have.is_complete()
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

    fn blocks_in(&self, piece: u32) -> usize {
        let (_, len) = self.layout.piece_range(piece as usize);
        len.div_ceil(BLOCK as u64) as usize
    }

    fn request(&self, piece: u32, block: usize) -> BlockRequest {
        let (_, len) = self.layout.piece_range(piece as usize);
        let offset = block as u32 * BLOCK;
        BlockRequest {
            piece,
            offset,
            length: BLOCK.min((len - offset as u64) as u32),
        }
    }

    fn wanted(&self, piece: usize) -> bool {
        !self.have.get(piece) && !self.verifying.get(piece)
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
        for piece in self.started_pieces(peer_has) {
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
            let blocks_len = self.blocks_in(piece);
            let blocks = vec![Block::Missing; blocks_len];
            self.partial.insert(
                piece,
                Partial {
                    blocks,
                    received: 0,
                    sources: vec![0; blocks_len],
                },
            );
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
                    let req = self.request(piece, i);
                    if outstanding.contains(&req) || out.contains(&req) {
                        continue;
                    }
                    let partial = self.partial.get_mut(&piece).expect("listed above");
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

    /// Pieces being downloaded that a peer holding `peer_has` can help with.
    fn started_pieces(&self, peer_has: &Bitfield) -> Vec<u32> {
        self.partial
            .keys()
            .copied()
            .filter(|&p| peer_has.get(p as usize))
            .collect()
    }

    fn take_missing(&mut self, piece: u32, want: usize, out: &mut Vec<BlockRequest>) {
        let count = self.partial[&piece].blocks.len();
        for i in 0..count {
            if out.len() >= want {
                return;
            }
            let partial = self.partial.get_mut(&piece).expect("caller checked");
            if partial.blocks[i] == Block::Missing {
                partial.blocks[i] = Block::Requested(1);
                out.push(self.request(piece, i));
            }
        }
    }

    fn choose_new(&mut self, peer_has: &Bitfield) -> Option<u32> {
        let count = self.availability.len();
        if count == 0 {
            return None;
        }
        let start = self.rng.usize(..count);
        let candidate =
            |p: usize| peer_has.get(p) && self.wanted(p) && !self.partial.contains_key(&(p as u32));
        if self.have.count() < RANDOM_FIRST {
            return (0..count)
                .map(|i| (start + i) % count)
                .find(|&p| candidate(p))
                .map(|p| p as u32);
        }
        // Rarest first; the random start breaks ties differently per pick.
        let mut best: Option<(u32, usize)> = None;
        for i in 0..count {
            let p = (start + i) % count;
            if candidate(p) && best.is_none_or(|(a, _)| self.availability[p] < a) {
                best = Some((self.availability[p], p));
            }
        }
        best.map(|(_, p)| p as u32)
    }

    /// Whether this block is still needed (write it, then call `arrived`).
    pub fn wants(&self, req: &BlockRequest) -> bool {
        let index = (req.offset / BLOCK) as usize;
        req.offset % BLOCK == 0
            && self
                .partial
                .get(&req.piece)
                .is_some_and(|p| index < p.blocks.len() && p.blocks[index] != Block::Received)
            && self.request(req.piece, index).length == req.length
    }

    /// Records a block that arrived from connection `source`.
    pub fn arrived(&mut self, req: &BlockRequest, source: u64) -> Arrival {
        let Some(partial) = self.partial.get_mut(&req.piece) else {
            return Arrival::Unwanted;
        };
        let index = (req.offset / BLOCK) as usize;
        if req.offset % BLOCK != 0 || index >= partial.blocks.len() {
            return Arrival::Unwanted;
        }
        let (_, piece_len) = self.layout.piece_range(req.piece as usize);
        if req.length != BLOCK.min((piece_len - req.offset as u64) as u32) {
            return Arrival::Unwanted;
        }
        let others_asked = matches!(partial.blocks[index], Block::Requested(n) if n > 1);
        if partial.blocks[index] == Block::Received {
            return Arrival::Unwanted;
        }
        partial.blocks[index] = Block::Received;
        partial.received += 1;
        partial.sources[index] = source;
        let piece_complete = partial.received == partial.blocks.len();
        if piece_complete {
            self.verifying.set(req.piece as usize);
        }
        Arrival::New {
            piece_complete,
            others_asked,
        }
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
                        Block::Missing
                    };
                }
            }
        }
    }

    /// The outcome of verifying a piece. For a piece that failed, returns
    /// the connection that sent each of its blocks.
    pub fn verified(&mut self, piece: u32, ok: bool) -> Vec<u64> {
        self.verifying.clear(piece as usize);
        let Some(partial) = self.partial.remove(&piece) else {
            return Vec::new();
        };
        if ok {
            self.have.set(piece as usize);
            Vec::new()
        } else {
            self.endgame = false;
            self.bump();
            partial.sources
        }
    }

    /// Whether a peer holding `bits` has anything we still want.
    pub fn interesting(&self, bits: &Bitfield) -> bool {
        bits.has_any_missing_from(&self.have)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn picker(pieces: usize) -> Picker {
        let files = [FileEntry {
            path: vec!["f".into()],
            length: pieces as u64 * 32768 - 100,
            pad: false,
        }];
        let layout = Layout::new(&files, 32768);
        Picker::new(layout, Bitfield::new(pieces))
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
            match p.arrived(req, 1) {
                Arrival::New {
                    piece_complete: true,
                    ..
                } => assert!(p.verified(req.piece, true).is_empty()),
                Arrival::New { .. } => {}
                Arrival::Unwanted => panic!("fresh block unwanted"),
            }
        }
        assert!(p.is_complete());
        assert_eq!(p.arrived(&dup[0], 2), Arrival::Unwanted);
        // The last block is short.
        assert!(rest.iter().chain(&first).any(|r| r.length == 16384 - 100));
    }

    #[test]
    fn failed_pieces_are_fetched_again_and_blame_their_sources() {
        let mut p = picker(1);
        let all = Bitfield::full(1);
        let reqs = p.pick(&all, 10, &[]);
        for r in &reqs {
            p.arrived(r, 7);
        }
        assert_eq!(p.verified(0, false), vec![7, 7]);
        assert_eq!(p.pick(&all, 10, &[]).len(), 2);
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
}
