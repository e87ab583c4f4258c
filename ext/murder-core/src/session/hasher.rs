//! Hashes each piece as its blocks arrive, on a thread of its own (never an
//! async worker), so a verified download reads nothing back from disk.
//! Blocks that arrive out of order, or when the thread is behind, make the
//! piece fall back to hashing what is on disk.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::oneshot;

/// Blocks queued for hashing at most (4 MiB of 16 KiB blocks).
const QUEUE: usize = 256;

enum Job {
    Block {
        piece: u32,
        offset: u32,
        data: Bytes,
    },
    Finish {
        piece: u32,
        length: u64,
        reply: oneshot::Sender<Option<[u8; 20]>>,
    },
}

struct Running {
    sha: Sha1,
    next: u64,
    broken: bool,
}

pub(crate) struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    pub fn start() -> std::io::Result<Hasher> {
        let (jobs, queue) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("murder-hasher".into())
            .spawn(move || work(queue))?;
        Ok(Hasher { jobs })
    }

    /// A block that just arrived, in the piece's order or not.
    pub fn block(&self, piece: u32, offset: u32, data: Bytes) {
        if let Err(TrySendError::Full(_)) = self.jobs.try_send(Job::Block {
            piece,
            offset,
            data,
        }) {
            // Behind: this piece will be hashed from disk (its running hash
            // now misses a block, so it cannot match).
        }
    }

    /// The SHA-1 of the piece's `length` bytes if every block was hashed in
    /// order; `None` means: hash it from disk.
    pub async fn finish(&self, piece: u32, length: u64) -> Option<[u8; 20]> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job::Finish {
                piece,
                length,
                reply,
            })
            .ok()?;
        answer.await.ok().flatten()
    }
}

fn work(queue: Receiver<Job>) {
    let mut running: HashMap<u32, Running> = HashMap::new();
    while let Ok(job) = queue.recv() {
        match job {
            Job::Block {
                piece,
                offset,
                data,
            } => {
                let state = if offset == 0 {
                    running.insert(
                        piece,
                        Running {
                            sha: Sha1::new(),
                            next: 0,
                            broken: false,
                        },
                    );
                    running.get_mut(&piece)
                } else {
                    running.get_mut(&piece)
                };
                // A late block of a piece already finished starts nothing.
                let Some(state) = state else { continue };
                if state.broken || offset as u64 != state.next {
                    state.broken = true;
                    continue;
                }
                state.sha.update(&data);
                state.next += data.len() as u64;
            }
            Job::Finish {
                piece,
                length,
                reply,
            } => {
                let digest = running
                    .remove(&piece)
                    .filter(|s| !s.broken && s.next == length)
                    .map(|s| s.sha.finalize().into());
                let _ = reply.send(digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_order_blocks_hash_and_anything_else_falls_back() {
        let hasher = Hasher::start().unwrap();
        let data = vec![7u8; 40_000];
        hasher.block(1, 0, Bytes::copy_from_slice(&data[..16384]));
        hasher.block(1, 16384, Bytes::copy_from_slice(&data[16384..32768]));
        hasher.block(1, 32768, Bytes::copy_from_slice(&data[32768..]));
        let expected: [u8; 20] = Sha1::digest(&data).into();
        assert_eq!(hasher.finish(1, 40_000).await, Some(expected));
        hasher.block(2, 0, Bytes::copy_from_slice(&data[..16384]));
        hasher.block(2, 32768, Bytes::copy_from_slice(&data[32768..]));
        hasher.block(2, 16384, Bytes::copy_from_slice(&data[16384..32768]));
        assert_eq!(hasher.finish(2, 40_000).await, None, "out of order");
        hasher.block(3, 0, Bytes::copy_from_slice(&data[..16384]));
        assert_eq!(hasher.finish(3, 40_000).await, None, "incomplete");
        assert_eq!(hasher.finish(4, 1).await, None, "never started");
    }
}
