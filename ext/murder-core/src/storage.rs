//! Where a torrent's bytes live on disk while it downloads and seeds.
//!
//! A download never writes at its destination: it fills a staging path
//! beside it (`DEST.part`, a file, or a directory for a multi-file torrent),
//! preallocated, with positional writes. Only when every piece is verified
//! are the files synced and the staging path renamed to the destination in
//! one step. Every path comes from a validated torrent, so it stays inside.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use crate::error::{Error, Result};
use crate::hashing::{check_pieces, DataSource};
use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::progress::Progress;

/// Most files kept open at once for a multi-file torrent (the `murder`
/// command raises its descriptor limit to allow this many and more).
const OPEN_FILES: usize = 1000;

pub struct Storage {
    meta: Arc<Metainfo>,
    layout: Layout,
    /// The file (single-file torrent) or directory the data is in now.
    root: RwLock<PathBuf>,
    writable: bool,
    open: Mutex<HashMap<usize, Arc<File>>>,
}

/// The staging path of a download: `DEST.part` beside `DEST`.
pub fn staging_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

impl Storage {
    /// Existing data to seed from (the file, or the directory named like the torrent).
    pub fn for_seeding(meta: Arc<Metainfo>, data: &Path) -> Storage {
        Storage::new(meta, data.to_path_buf(), false)
    }

    /// Opens (or creates) the staging area of a download to `dest` and
    /// returns which pieces it already holds, checked against their hashes:
    /// a restarted download keeps every verified piece.
    pub fn for_download(
        meta: Arc<Metainfo>,
        dest: &Path,
        progress: &Progress,
    ) -> Result<(Storage, Bitfield)> {
        let staging = staging_path(dest);
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        // A staging area from an earlier run is checked piece by piece; a
        // new one holds nothing yet, so there is nothing to hash.
        let resuming = staging.exists();
        let storage = Storage::new(meta.clone(), staging.clone(), true);
        // Create every file at its full size (sparse), directories first.
        for (index, file) in meta.files.iter().enumerate() {
            if file.pad {
                continue;
            }
            let path = storage.file_path(&staging, index);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            if len != file.length {
                f.set_len(file.length).map_err(|e| Error::io(&path, e))?;
            }
        }
        let have = if resuming {
            verified_pieces(&meta, &staging, progress)?
        } else {
            Bitfield::new(meta.piece_count())
        };
        Ok((storage, have))
    }

    fn new(meta: Arc<Metainfo>, root: PathBuf, writable: bool) -> Storage {
        Storage {
            layout: meta.layout(),
            meta,
            root: RwLock::new(root),
            writable,
            open: Mutex::new(HashMap::new()),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn file_path(&self, root: &Path, index: usize) -> PathBuf {
        if self.meta.single_file {
            root.to_path_buf()
        } else {
            self.meta.files[index]
                .path
                .iter()
                .fold(root.to_path_buf(), |p, c| p.join(c))
        }
    }

    fn file(&self, index: usize) -> std::io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(&index) {
            return Ok(f.clone());
        }
        let root = self.root.read().unwrap_or_else(|e| e.into_inner()).clone();
        let path = self.file_path(&root, index);
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(self.writable)
                .open(path)?,
        );
        if open.len() >= OPEN_FILES {
            if let Some(&evict) = open.keys().next() {
                open.remove(&evict);
            }
        }
        open.insert(index, file.clone());
        Ok(file)
    }

    /// Reads `buf.len()` bytes of piece `piece` from `offset` within it.
    pub fn read(&self, piece: u32, offset: u32, buf: &mut [u8]) -> std::io::Result<()> {
        let start = piece as u64 * self.layout.piece_length() + offset as u64;
        let mut at = 0usize;
        for span in self.layout.spans(start, buf.len() as u64) {
            let dest = &mut buf[at..at + span.len as usize];
            at += span.len as usize;
            if span.pad {
                dest.fill(0);
            } else {
                self.file(span.file)?
                    .read_exact_at(dest, span.file_offset)?;
            }
        }
        Ok(())
    }

    /// Writes a block at `offset` within piece `piece`.
    pub fn write(&self, piece: u32, offset: u32, data: &[u8]) -> std::io::Result<()> {
        let start = piece as u64 * self.layout.piece_length() + offset as u64;
        let mut at = 0usize;
        for span in self.layout.spans(start, data.len() as u64) {
            let part = &data[at..at + span.len as usize];
            at += span.len as usize;
            if !span.pad {
                self.file(span.file)?.write_all_at(part, span.file_offset)?;
            }
        }
        Ok(())
    }

    /// SHA-1 of a whole piece as it is on disk.
    pub fn hash_piece(&self, piece: u32) -> std::io::Result<[u8; 20]> {
        let (_, len) = self.layout.piece_range(piece as usize);
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; (256 * 1024).min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            self.read(piece, done as u32, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        Ok(hasher.finalize().into())
    }

    /// Syncs every file and renames the staging path to `dest`. Open files
    /// stay valid (a rename keeps the inodes), so seeding goes on.
    pub fn finish(&self, dest: &Path) -> Result<()> {
        let staging = self.root.read().unwrap_or_else(|e| e.into_inner()).clone();
        // fsync every file, many at once: the journal batches the commits.
        let real_files: Vec<usize> = (0..self.meta.files.len())
            .filter(|&i| !self.meta.files[i].pad)
            .collect();
        real_files.par_iter().try_for_each(|&index| {
            let path = || self.file_path(&staging, index);
            let f = self.file(index).map_err(|e| Error::io(path(), e))?;
            f.sync_data().map_err(|e| Error::io(path(), e))
        })?;
        if dest.exists() {
            return Err(Error::InvalidArgument(format!(
                "{}: appeared while downloading; the verified download stays at {}",
                dest.display(),
                staging.display()
            )));
        }
        std::fs::rename(&staging, dest).map_err(|e| Error::io(dest, e))?;
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        *self.root.write().unwrap_or_else(|e| e.into_inner()) = dest.to_path_buf();
        Ok(())
    }
}

/// Which pieces of the data at `path` match the torrent.
pub fn verified_pieces(meta: &Metainfo, path: &Path, progress: &Progress) -> Result<Bitfield> {
    let ok = check_pieces(&DataSource::for_torrent(meta, path), &meta.pieces, progress)?;
    let mut have = Bitfield::new(meta.piece_count());
    for (i, _) in ok.iter().enumerate().filter(|(_, ok)| **ok) {
        have.set(i);
    }
    Ok(have)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::create::{create_torrent, CreateOptions};

    #[test]
    fn a_download_is_staged_then_renamed_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a"), vec![1u8; 40_000]).unwrap();
        std::fs::write(src.join("sub/b"), vec![2u8; 30_000]).unwrap();
        let mut opts = CreateOptions::new("t:1");
        opts.piece_length = Some(16384);
        let meta = Arc::new(create_torrent(&src, &opts, &Progress::new()).unwrap());
        let seed = Storage::for_seeding(meta.clone(), &src);
        let dest = dir.path().join("out/release");
        let (storage, have) = Storage::for_download(meta.clone(), &dest, &Progress::new()).unwrap();
        assert_eq!(have.count(), 0);
        assert!(!dest.exists() && staging_path(&dest).join("sub/b").exists());
        // Copy two pieces, "crash", and resume.
        let mut buf = vec![0u8; 16384];
        for piece in 0..2 {
            seed.read(piece, 0, &mut buf).unwrap();
            storage.write(piece, 0, &buf).unwrap();
            assert_eq!(
                storage.hash_piece(piece).unwrap(),
                meta.pieces[piece as usize]
            );
        }
        drop(storage);
        let (storage, have) = Storage::for_download(meta.clone(), &dest, &Progress::new()).unwrap();
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0, 1]);
        for piece in 2..meta.piece_count() as u32 {
            let (_, len) = meta.layout().piece_range(piece as usize);
            seed.read(piece, 0, &mut buf[..len as usize]).unwrap();
            storage.write(piece, 0, &buf[..len as usize]).unwrap();
        }
        storage.finish(&dest).unwrap();
        assert!(!staging_path(&dest).exists());
        assert_eq!(
            std::fs::read(dest.join("sub/b")).unwrap(),
            vec![2u8; 30_000]
        );
        // Still readable (seeding goes on) after the rename.
        storage.read(0, 0, &mut buf[..10]).unwrap();
        assert_eq!(&buf[..10], &[1u8; 10]);
    }
}
