//! What a piece-aligned file hashed to, kept between runs, so that making
//! the torrent of a release whose files are mostly unchanged hashes only the
//! files that changed. With aligned files a file's pieces depend on that
//! file alone.
//!
//! An entry is keyed so that a changed file can never hit it: the path, the
//! device and inode, the size, the modification and status-change times
//! with nanoseconds (a write always moves ctime, which no user can set
//! back), the piece length and whether the file's last piece is padded. A
//! file changed within the last second is hashed but not remembered, since
//! a write in the same clock tick would leave its times as they were.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fsutil::write_privately;

/// 2: entries carry the file's own SHA-1 (BEP 47 `sha1`) beside its pieces.
const VERSION: u32 = 2;

/// What one file hashed to: its piece hashes (its last piece zero-padded
/// when the torrent pads it) and the SHA-1 of its own bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    pub pieces: Vec<[u8; 20]>,
    pub sha1: [u8; 20],
}

/// The identity of one file's contents as the file system shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub piece_length: u64,
    pub padded: bool,
    /// The file changed within a second of when it was looked at, so a
    /// write in the same tick would not show: such a key is never stored.
    /// Decided when the key is taken, not when the hashes are recorded
    /// (hashing a tree takes seconds).
    #[serde(skip)]
    racy: bool,
}

impl FileKey {
    pub fn new(path: &Path, meta: &std::fs::Metadata, piece_length: u64, padded: bool) -> FileKey {
        let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
        let ctime_ns = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        FileKey {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns,
            ctime_ns,
            piece_length,
            padded,
            racy: now - mtime_ns.max(ctime_ns) < 1_000_000_000,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: FileKey,
    /// The file's piece hashes, hex.
    pieces: Vec<String>,
    /// The SHA-1 of the file's bytes, hex.
    sha1: String,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    entries: Vec<Entry>,
}

/// Piece hashes of files, by `FileKey`.
#[derive(Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    old: HashMap<FileKey, FileHashes>,
    used: HashMap<FileKey, FileHashes>,
    pub hits: usize,
    pub misses: usize,
}

impl HashCache {
    /// Loads the cache at `path` (missing, unreadable or of another version:
    /// an empty cache; it is a cache).
    pub fn load(path: &Path) -> HashCache {
        let old = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<OnDisk>(&bytes).ok())
            .filter(|d| d.version == VERSION)
            .map(|d| {
                d.entries
                    .into_iter()
                    .filter_map(|e| {
                        let digest = |h: &String| {
                            let mut out = [0u8; 20];
                            hex::decode_to_slice(h, &mut out).ok().map(|_| out)
                        };
                        let pieces = e.pieces.iter().map(digest).collect::<Option<Vec<_>>>()?;
                        let sha1 = digest(&e.sha1)?;
                        Some((e.key, FileHashes { pieces, sha1 }))
                    })
                    .collect()
            })
            .unwrap_or_default();
        HashCache {
            path: Some(path.to_path_buf()),
            old,
            ..HashCache::default()
        }
    }

    pub fn get(&self, key: &FileKey) -> Option<&FileHashes> {
        self.old.get(key)
    }

    /// Records what a file hashed to (unless it changed too recently).
    pub fn insert(&mut self, key: FileKey, hashes: FileHashes) {
        if !key.racy {
            self.used.insert(key, hashes);
        }
    }

    /// Writes the entries of this run (older ones are dropped, so the cache
    /// never grows beyond one release) atomically.
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut entries: Vec<Entry> = self
            .used
            .iter()
            .map(|(key, hashes)| Entry {
                key: key.clone(),
                pieces: hashes.pieces.iter().map(hex::encode).collect(),
                sha1: hex::encode(hashes.sha1),
            })
            .collect();
        entries.sort_by(|a, b| a.key.path.cmp(&b.key.path));
        let bytes = serde_json::to_vec(&OnDisk {
            version: VERSION,
            entries,
        })
        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
        }
        write_privately(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that changed just before it was looked at is never trusted
    /// from the cache, however long its hashing took: the review found a
    /// key judged when the hashes were recorded, a second or more later,
    /// so a file rewritten in the same timestamp tick could hit for ever.
    #[test]
    fn a_file_changed_just_before_its_key_was_taken_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"one").unwrap();
        let key = FileKey::new(&file, &std::fs::metadata(&file).unwrap(), 16384, false);
        std::thread::sleep(std::time::Duration::from_millis(1100)); // hashing a tree
        let cache_path = dir.path().join("hashes.json");
        let mut cache = HashCache::load(&cache_path);
        let hashes = FileHashes {
            pieces: vec![[1; 20]],
            sha1: [2; 20],
        };
        cache.insert(key.clone(), hashes.clone());
        cache.save().unwrap();
        // The same file, unchanged, looked at again later: its key is settled
        // now, and must not find what was recorded under the racy one.
        let later = FileKey::new(&file, &std::fs::metadata(&file).unwrap(), 16384, false);
        assert!(
            HashCache::load(&cache_path).get(&later).is_none(),
            "a racy key was stored"
        );

        // Settled: stored, and found again by a key taken anew.
        let mut cache = HashCache::load(&cache_path);
        cache.insert(later, hashes.clone());
        cache.save().unwrap();
        let again = FileKey::new(&file, &std::fs::metadata(&file).unwrap(), 16384, false);
        assert_eq!(HashCache::load(&cache_path).get(&again), Some(&hashes));
    }
}
