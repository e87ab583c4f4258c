//! The verifier's thread: hashes each piece as its blocks are written (in
//! any order: blocks that arrive early wait in memory until the bytes
//! before them came), so a verified download seldom reads anything back,
//! and answers each piece's verification with a verdict. It runs on a
//! thread of its own, never an async worker, and it is the only place that
//! decides whether a piece's bytes are the torrent's (rule P3 of STATE.md).
//!
//! The bytes it hashes are those the piece's accepted writers wrote (each
//! block is handed over after its write succeeded), with zeros where pad
//! files lie: the bytes on disk. Blocks it had no room for, and blocks of a
//! piece whose memory budget ran out, are read back from disk instead. A
//! piece that holds one whole file and then padding (an aligned tree's
//! small files: most of a release) is checked by that file's own SHA-1
//! (BEP 47, under the info-hash, as reuse checks it) when hashed from
//! memory: its pad is zeros on no disk, and hashing them was most of the
//! work of a first deploy of such a tree.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::mpsc::UnboundedSender;

use crate::error::Error;
use crate::metainfo::Metainfo;
use crate::picker::VerifyJob;
use crate::storage::Storage;
use crate::wire::BLOCK;

/// Block bytes waiting for the thread, or held by it until the bytes
/// before them come, at most; beyond this, pieces are hashed from disk.
const BUDGET: u64 = 64 << 20;

enum Job {
    Block {
        piece: u32,
        offset: u32,
        data: Bytes,
    },
    /// A block of this piece was not handed over (no room): hash it from disk.
    Skipped {
        piece: u32,
    },
    Verify(VerifyJob),
}

/// The outcome of one verification.
pub(crate) struct Verdict {
    pub job: VerifyJob,
    /// The piece's bytes are the torrent's.
    pub ok: bool,
    /// SHA-1 of each 16 KiB block as on disk, when the job asked for them.
    pub block_hashes: Vec<[u8; 20]>,
    /// The piece could not be read back (a disk fault: the session fails).
    pub error: Option<Error>,
}

pub(crate) struct Hasher {
    jobs: Mutex<Option<Sender<Job>>>,
    queued: Arc<AtomicU64>,
    /// The hasher's thread, then the write-back thread it feeds.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Hasher {
    pub fn start(
        storage: Arc<Storage>,
        meta: &Metainfo,
        verdicts: UnboundedSender<Verdict>,
    ) -> std::io::Result<Hasher> {
        let expected = Arc::new(meta.pieces.clone());
        let whole_files = whole_file_hashes(meta);
        let (jobs, queue) = channel();
        let queued = Arc::new(AtomicU64::new(0));
        // Write-back waits on the disk (sync_file_range blocks while the
        // device's queue is full): on a thread of its own, a slow disk
        // delays no verdict, and so no `have` to the swarm. It ends when
        // the hasher drops its sender.
        let (writeback, verified) = channel::<u32>();
        let writer = storage.clone();
        let writeback_thread = std::thread::Builder::new()
            .name("murder-writeback".into())
            .spawn(move || {
                while let Ok(piece) = verified.recv() {
                    writer.start_writeback(piece);
                }
            })?;
        let worker = Worker {
            storage,
            expected,
            whole_files,
            verdicts,
            writeback,
            queued: queued.clone(),
            running: HashMap::new(),
        };
        let thread = std::thread::Builder::new()
            .name("murder-hasher".into())
            .spawn(move || worker.run(queue))?;
        Ok(Hasher {
            jobs: Mutex::new(Some(jobs)),
            queued,
            threads: Mutex::new(vec![thread, writeback_thread]),
        })
    }

    fn send(&self, job: Job) {
        if let Some(jobs) = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = jobs.send(job);
        }
    }

    /// A block that was just written. Call before `Picker::written`, so
    /// that every block of a piece reaches the thread before its `verify`.
    pub fn block(&self, piece: u32, offset: u32, data: Bytes) {
        let len = data.len() as u64;
        if self.queued.fetch_add(len, Ordering::Relaxed) + len > BUDGET {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.send(Job::Skipped { piece });
        } else {
            self.send(Job::Block {
                piece,
                offset,
                data,
            });
        }
    }

    /// Verifies a piece whose every block is on disk; the verdict goes to
    /// the session's verifier task.
    pub fn verify(&self, job: VerifyJob) {
        self.send(Job::Verify(job));
    }

    /// Ends the threads once they have done what they were given (the
    /// hasher's verdicts, then the write-back it asked for); joins them.
    pub fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// For each piece that holds one whole file of the torrent, from its first
/// byte, and then only padding: that file's SHA-1 (BEP 47), if the torrent
/// gives it.
fn whole_file_hashes(meta: &Metainfo) -> Vec<Option<[u8; 20]>> {
    let layout = meta.layout();
    (0..meta.piece_count())
        .map(|piece| {
            let (start, len) = layout.piece_range(piece);
            let mut spans = layout.spans(start, len);
            let first = spans.next()?;
            let file = &meta.files[first.file];
            let whole = !first.pad && first.file_offset == 0 && first.len == file.length;
            let padded = spans.all(|s| s.pad) && first.len < len;
            (whole && padded).then_some(file.sha1).flatten()
        })
        .collect()
}

/// Bytes of blocks waiting in `early`.
fn held(early: &BTreeMap<u64, Bytes>) -> u64 {
    early.values().map(|b| b.len() as u64).sum()
}

/// A piece's running hash: the bytes hashed so far and blocks that came
/// early.
struct Running {
    sha: Sha1,
    next: u64,
    early: BTreeMap<u64, Bytes>,
    skipped: bool,
}

struct Worker {
    storage: Arc<Storage>,
    expected: Arc<Vec<[u8; 20]>>,
    /// `whole_file_hashes`: pieces checked by their file's SHA-1.
    whole_files: Vec<Option<[u8; 20]>>,
    verdicts: UnboundedSender<Verdict>,
    /// Verified pieces, for the write-back thread.
    writeback: Sender<u32>,
    queued: Arc<AtomicU64>,
    running: HashMap<u32, Running>,
}

impl Worker {
    fn run(mut self, queue: Receiver<Job>) {
        while let Ok(job) = queue.recv() {
            match job {
                Job::Block {
                    piece,
                    offset,
                    data,
                } => {
                    let released = self.add(piece, offset as u64, data);
                    self.queued.fetch_sub(released, Ordering::Relaxed);
                }
                Job::Skipped { piece } => {
                    let state = self.state(piece);
                    state.skipped = true;
                    let released = held(&state.early);
                    state.early.clear();
                    self.queued.fetch_sub(released, Ordering::Relaxed);
                }
                Job::Verify(job) => {
                    let verdict = self.verdict(job);
                    if self.verdicts.send(verdict).is_err() {
                        break; // the session is gone
                    }
                }
            }
        }
    }

    fn state(&mut self, piece: u32) -> &mut Running {
        self.running.entry(piece).or_insert_with(|| Running {
            sha: Sha1::new(),
            next: 0,
            early: BTreeMap::new(),
            skipped: false,
        })
    }

    /// Hashes a block, or keeps it until the bytes before it came. Returns
    /// the bytes no longer held: blocks that wait stay counted in `queued`
    /// (the budget), so a peer that withholds the first block of every
    /// piece it sends cannot make the thread hold more than the budget.
    fn add(&mut self, piece: u32, offset: u64, data: Bytes) -> u64 {
        let state = self.state(piece);
        let len = data.len() as u64;
        if state.skipped {
            return len;
        }
        if offset != state.next {
            // A copy: a slice of a socket's read buffer keeps all of it.
            if let Some(old) = state.early.insert(offset, Bytes::copy_from_slice(&data)) {
                return old.len() as u64; // sent twice: the later one counts
            }
            return 0;
        }
        state.sha.update(&data);
        state.next += len;
        let mut released = len;
        while let Some(data) = state.early.remove(&state.next) {
            state.sha.update(&data);
            state.next += data.len() as u64;
            released += data.len() as u64;
        }
        released
    }

    fn verdict(&mut self, job: VerifyJob) -> Verdict {
        let running = self.running.remove(&job.piece);
        if let Some(r) = &running {
            self.queued.fetch_sub(held(&r.early), Ordering::Relaxed);
        }
        let in_memory =
            running.filter(|r| !r.skipped && r.next == job.data_end && r.early.is_empty());
        let whole_file = self.whole_files.get(job.piece as usize).copied().flatten();
        let expected = self.expected.get(job.piece as usize);
        let ok: Result<bool, Error> = match (in_memory, whole_file) {
            // The bytes hashed are the file's, all of them: the rest of
            // the piece is padding.
            (Some(r), Some(file_sha1)) => Ok(<[u8; 20]>::from(r.sha.finalize()) == file_sha1),
            (Some(mut r), None) => {
                // Trailing padding: zeros on no disk.
                let zeros = [0u8; BLOCK as usize];
                let mut left = job.length - job.data_end;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    r.sha.update(&zeros[..n]);
                    left -= n as u64;
                }
                Ok(expected == Some(&r.sha.finalize().into()))
            }
            (None, _) => self
                .storage
                .hash_piece(job.piece)
                .map(|d| expected == Some(&d)),
        };
        let mut verdict = Verdict {
            ok: false,
            block_hashes: Vec::new(),
            error: None,
            job,
        };
        let piece = verdict.job.piece;
        match ok {
            Ok(ok) => verdict.ok = ok,
            Err(e) => {
                verdict.error = Some(e);
                return verdict;
            }
        }
        if verdict.job.block_hashes {
            match self.storage.block_hashes(piece) {
                Ok(hashes) => verdict.block_hashes = hashes,
                Err(e) => verdict.error = Some(e),
            }
        }
        if verdict.ok {
            // Durable without a stall at the end: the kernel starts writing
            // the piece back now, so the final sync has little left to do.
            let _ = self.writeback.send(piece);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create_torrent, CreateOptions};
    use crate::progress::Progress;
    use crate::storage::Storage;

    /// Rule P3: the verdict is on the bytes written, in whatever order they
    /// came; a piece the thread did not see whole is read back from disk.
    /// A download of `len` known bytes in 64 KiB pieces, its storage and a
    /// hasher whose verdicts come out of the receiver.
    struct Rig {
        _dir: tempfile::TempDir,
        bytes: Vec<u8>,
        meta: Arc<crate::metainfo::Metainfo>,
        storage: Arc<Storage>,
        hasher: Hasher,
        verdicts: tokio::sync::mpsc::UnboundedReceiver<Verdict>,
    }

    /// A download's storage of `meta` to `dest`, its hasher, and the
    /// receiver of the hasher's verdicts.
    fn download(
        meta: &Arc<crate::metainfo::Metainfo>,
        dest: &std::path::Path,
    ) -> (
        Arc<Storage>,
        Hasher,
        tokio::sync::mpsc::UnboundedReceiver<Verdict>,
    ) {
        let reuse = crate::reuse::ReuseConfig::default();
        let (storage, _, _) =
            Storage::for_download(meta.clone(), dest, &Progress::new(), true, &reuse).unwrap();
        let storage = Arc::new(storage);
        let (tx, verdicts) = tokio::sync::mpsc::unbounded_channel();
        let hasher = Hasher::start(storage.clone(), meta, tx).unwrap();
        (storage, hasher, verdicts)
    }

    fn rig(len: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("data");
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &bytes).unwrap();
        let mut opts = CreateOptions::new("t:1");
        opts.piece_length = Some(64 * 1024);
        let meta = Arc::new(create_torrent(&src, &opts, &Progress::new()).unwrap());
        let (storage, hasher, verdicts) = download(&meta, &dir.path().join("out"));
        Rig {
            _dir: dir,
            bytes,
            meta,
            storage,
            hasher,
            verdicts,
        }
    }

    #[tokio::test]
    async fn rule_p3_blocks_in_any_order_or_from_disk() {
        let Rig {
            _dir,
            bytes,
            meta,
            storage,
            hasher,
            verdicts: mut rx,
        } = rig(200_000);
        let layout = meta.layout();
        let job = |piece: u32| {
            let (_, length) = layout.piece_range(piece as usize);
            VerifyJob {
                piece,
                length,
                data_end: length,
                block_hashes: false,
                pad_dirty: false,
            }
        };
        let block = |piece: u32, offset: u32| {
            let at = piece as usize * 65536 + offset as usize;
            Bytes::copy_from_slice(&bytes[at..at + 16384])
        };
        // Piece 0: blocks written and handed over out of order.
        for offset in [16384, 0, 49152, 32768] {
            storage.write(0, offset, &block(0, offset)).unwrap();
            hasher.block(0, offset, block(0, offset));
        }
        hasher.verify(job(0));
        assert!(rx.recv().await.unwrap().ok);
        // Piece 1: on disk, never handed over: read back.
        for offset in [0, 16384, 32768, 49152] {
            storage.write(1, offset, &block(1, offset)).unwrap();
        }
        hasher.verify(job(1));
        assert!(rx.recv().await.unwrap().ok);
        // Piece 2: the bytes handed over are not the torrent's.
        for offset in [0, 16384, 32768, 49152] {
            hasher.block(2, offset, Bytes::from(vec![7u8; 16384]));
        }
        let mut bad = job(2);
        bad.block_hashes = true;
        hasher.verify(bad);
        let verdict = rx.recv().await.unwrap();
        assert!(!verdict.ok);
        assert_eq!(
            verdict.block_hashes.len(),
            4,
            "block hashes from disk, for blame"
        );
        hasher.stop();
    }

    /// Rule P3 for a piece of one whole file and padding (an aligned
    /// tree's small file): hashed from memory, it is checked by the file's
    /// own SHA-1, so its zeros are not hashed; read back from disk, by the
    /// piece's hash. Shown with a torrent whose piece hash for it is wrong
    /// and whose file SHA-1 is right: memory says yes, disk says no.
    #[tokio::test]
    async fn rule_p3_a_piece_of_one_whole_file_is_checked_by_its_file_sha1() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tree");
        std::fs::create_dir_all(&src).unwrap();
        let a: Vec<u8> = (0..2000u32).map(|i| (i % 253) as u8).collect();
        std::fs::write(src.join("a"), &a).unwrap();
        std::fs::write(src.join("b"), vec![9u8; 40_000]).unwrap();
        let mut opts = CreateOptions::new("t:1");
        opts.piece_length = Some(64 * 1024);
        opts.align = true;
        let made = create_torrent(&src, &opts, &Progress::new()).unwrap();
        assert_eq!(whole_file_hashes(&made)[0], made.files[0].sha1);
        assert_eq!(
            whole_file_hashes(&made)[1],
            None,
            "b ends the torrent: no padding"
        );
        // Piece 0's hash made wrong; `a`'s SHA-1 kept.
        let bytes = made.to_bytes();
        let at = bytes.windows(20).position(|w| w == made.pieces[0]).unwrap();
        let mut wrong = bytes.clone();
        wrong[at] ^= 0xff;
        let meta = Arc::new(crate::metainfo::Metainfo::from_bytes(&wrong).unwrap());
        let (storage, hasher, mut rx) = download(&meta, &dir.path().join("out"));
        let job = VerifyJob {
            piece: 0,
            length: 65_536,
            data_end: 2000,
            block_hashes: false,
            pad_dirty: false,
        };
        storage.write(0, 0, &a).unwrap();
        hasher.block(0, 0, Bytes::copy_from_slice(&a));
        hasher.verify(job.clone());
        assert!(rx.recv().await.unwrap().ok, "from memory: a's own SHA-1");
        hasher.verify(job.clone());
        assert!(!rx.recv().await.unwrap().ok, "from disk: the piece's hash");
        // Other bytes than a's, from memory: refused.
        let mut liar = a.clone();
        liar[1999] ^= 1;
        hasher.block(0, 0, Bytes::from(liar));
        hasher.verify(job);
        assert!(!rx.recv().await.unwrap().ok);
        hasher.stop();
    }

    /// Rule P3's memory: blocks held until the bytes before them come count
    /// against the budget. A peer that sends every block of many pieces but
    /// the first made the thread hold them all (uncounted: the budget
    /// counted only blocks in the channel); past the budget, a piece is now
    /// hashed from disk, which shows here as a verdict on the bytes on disk
    /// rather than on those handed over.
    #[tokio::test]
    async fn rule_p3_blocks_held_out_of_order_count_against_the_budget() {
        let Rig {
            _dir,
            bytes,
            storage,
            hasher,
            verdicts: mut rx,
            ..
        } = rig(65_536);
        let job0 = VerifyJob {
            piece: 0,
            length: 65_536,
            data_end: 65_536,
            block_hashes: false,
            pad_dirty: false,
        };
        // Pieces 1.. (of a torrent as large as a peer may claim): every
        // block but the first, 96 MiB in all, in batches the thread takes
        // in before the next (a verdict on piece 0, from disk, marks each):
        // the channel itself never holds more than 12 MiB.
        let junk = Bytes::from(vec![1u8; 16384]);
        for batch in 0..8u32 {
            for piece in batch * 256 + 1..=(batch + 1) * 256 {
                for offset in [16384, 32768, 49152] {
                    hasher.block(piece, offset, junk.clone());
                }
            }
            hasher.verify(job0.clone());
            rx.recv().await.unwrap();
        }
        // Piece 0: the torrent's bytes on disk, other bytes handed over.
        for offset in [0u32, 16384, 32768, 49152] {
            let at = offset as usize;
            storage.write(0, offset, &bytes[at..at + 16384]).unwrap();
            hasher.block(0, offset, Bytes::from(vec![7u8; 16384]));
        }
        hasher.verify(job0);
        assert!(
            rx.recv().await.unwrap().ok,
            "piece 0 was hashed from memory: the thread held more than its budget"
        );
        assert!(hasher.queued.load(Ordering::Relaxed) <= BUDGET);
        hasher.stop();
    }
}
