//! Where a torrent's bytes live on disk while it downloads and seeds.
//!
//! A download never writes at its destination: it fills a staging path
//! beside it (`.DEST.part`, hidden, a file or a directory for a multi-file
//! torrent), first with what `reuse` finds on the host, then by positional
//! writes into files whose space is reserved up front. Verified pieces are
//! written back as they pass; only when every piece is verified are modes
//! set, links made, the data synced and the staging path renamed to the
//! destination in one step. Every path comes from a validated torrent, so
//! it stays inside. Every error names the file it happened to.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use sha1::{Digest, Sha1};

use crate::bitfield::Bitfield;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::hashing::{check_pieces, DataSource};
use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::progress::Progress;
use crate::reuse::{self, ReuseConfig, Reused};

/// Files kept open at once: half the process's descriptor limit (the
/// `murder` command raises it), within these bounds. A tree of thousands of
/// files is written and served in random order, and reopening what was
/// evicted cost a host more CPU than its network reads. The floor stays far
/// below any real limit: more than half of it would leave too few
/// descriptors for sockets, and a file that cannot be opened fails the
/// session (rule W1).
const OPEN_FILES_MIN: usize = 16;
const OPEN_FILES_MAX: usize = 16384;
/// Files at least this large get their space reserved (fallocate) when a
/// download starts; smaller ones are only counted against the free space.
const RESERVE_MIN_BYTES: u64 = 1 << 20;
/// Files synced at once when a tree is staged (see `sync_each`).
const SYNC_THREADS: usize = 32;
/// From this many files written by a download, its staged tree is synced
/// with one syncfs (see `SyncPlan`).
const SYNC_FILE_SYSTEM_FROM: usize = 256;

/// How a staged tree is made durable. Each fsync ends in a flush of the
/// disk's cache, and a first release of thousands of files paid one per
/// file and directory: bench/release (16 hosts, one disk) measured the
/// slowest host's final sync at 0.9 and 3.1 s that way, against 0.8 and
/// 1.0 s with one syncfs per host, which writes out what is dirty on the
/// file system (little of this download's data: verified pieces are
/// written back as they pass) and flushes once. But syncfs also writes
/// what others left dirty, and a repeat deploy's hard links dirty every
/// linked inode: there (a few files written, hundreds of directories)
/// one fsync per file and directory took 0.03-0.35 s, one syncfs 0.7-0.9
/// s. So the count of files written decides.
#[derive(Debug, PartialEq, Eq)]
enum SyncPlan {
    Each,
    FileSystem,
}

impl SyncPlan {
    fn for_files_written(files: usize) -> SyncPlan {
        if files >= SYNC_FILE_SYSTEM_FROM {
            SyncPlan::FileSystem
        } else {
            SyncPlan::Each
        }
    }
}

/// A read that failed, and in which of the torrent's files (by index: no
/// path is made on the path that succeeds).
#[derive(Debug)]
pub struct ReadError {
    pub file: usize,
    pub error: std::io::Error,
}

pub struct Storage {
    meta: Arc<Metainfo>,
    layout: Layout,
    /// The file (single-file torrent) or directory the data is in now.
    root: RwLock<PathBuf>,
    writable: bool,
    open: Mutex<HashMap<usize, Arc<File>>>,
    open_limit: usize,
    /// Files hard-linked from an earlier release or attempt: never written
    /// or chmodded, and synced only when linked from a staging area.
    linked: std::collections::HashSet<usize>,
    /// Those of `linked` whose source was a failed attempt's staging area.
    linked_from_staging: std::collections::HashSet<usize>,
}

/// The staging path of a download: `.DEST.part` beside `DEST`. Hidden, so
/// that a listing of releases (Capistrano's `ls -xt releases`, for a
/// rollback) never takes a half download for a release.
pub fn staging_path(dest: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(".part");
    dest.with_file_name(name)
}

/// Whether `name` is a staging path's name (`.NAME.part`, see
/// `staging_path`): a download's, perhaps a failed attempt's.
pub fn is_staging_name(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') && name.ends_with(".part")
}

impl Storage {
    /// Existing data to seed from (the file, or the directory named like the torrent).
    pub fn for_seeding(meta: Arc<Metainfo>, data: &Path) -> Storage {
        Storage::new(meta, data.to_path_buf(), false)
    }

    /// Opens (or creates) the staging area of a download to `dest` and
    /// returns which pieces it holds already, each checked against its hash:
    /// a restarted download keeps every verified piece, and content found by
    /// `reuse` comes in before anything is downloaded. With `reserve`, the
    /// space of every file still to download is reserved now, so a release
    /// that does not fit fails here (rule W1 of STATE.md); a new staging
    /// area that fails is removed again.
    pub fn for_download(
        meta: Arc<Metainfo>,
        dest: &Path,
        progress: &Progress,
        reserve: bool,
        reuse_config: &ReuseConfig,
    ) -> Result<(Storage, Bitfield, Reused)> {
        let staging = staging_path(dest);
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        // A staging area from an earlier run is checked piece by piece; a
        // new one holds nothing yet, so there is nothing to hash.
        if staging.exists() || staging.is_symlink() {
            prune_to_torrent(&meta, &staging)?;
        }
        let resuming = staging.exists();
        let prepared = (|| {
            let mut have = if resuming {
                verified_pieces(&meta, &staging, progress)?
            } else {
                Bitfield::new(meta.piece_count())
            };
            if !meta.single_file {
                std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
            }
            let mut storage = Storage::new(meta.clone(), staging.clone(), true);
            if resuming {
                storage.unshare_unverified(&staging, &mut have, reuse_config.mode)?;
            }
            let skip = [staging.as_path(), dest];
            let reused = reuse::reuse(&meta, &staging, &have, reuse_config, &skip, progress)?;
            for p in reused.pieces.iter_ones() {
                have.set(p);
            }
            storage.linked = reused.linked.iter().copied().collect();
            storage.linked_from_staging = reused.linked_from_staging.iter().copied().collect();
            storage.create_files(&staging, reserve, &have)?;
            Ok((storage, have, reused))
        })();
        if prepared.is_err() && !resuming {
            let _ = if meta.single_file {
                std::fs::remove_file(&staging)
            } else {
                std::fs::remove_dir_all(&staging)
            };
        }
        prepared
    }

    /// Every file still to download at its full size, directories first;
    /// space reserved when asked and the file system can. Files that hold
    /// every piece already (reused ones: perhaps hard links into an earlier
    /// release) are left alone.
    fn create_files(&self, staging: &Path, reserve: bool, have: &Bitfield) -> Result<()> {
        let mut offset = 0u64;
        // Each directory made once (create_dir_all per file is a mkdir and
        // a stat per file of a tree).
        let mut made = std::collections::HashSet::new();
        // Small files are not reserved one by one (a fallocate per file,
        // then a conversion of its unwritten extent at the first write,
        // cost a tree of thousands of files more than its bytes): their
        // total, rounded up to blocks, is checked against the free space
        // once, so a release that does not fit still fails up front.
        if reserve {
            self.check_room_for_small_files(staging, have)?;
        }
        for (index, file) in self.meta.files.iter().enumerate() {
            let start = offset;
            offset += file.length;
            if !file.is_regular() {
                continue;
            }
            let path = self.file_path(staging, index);
            let complete = file.length > 0 && self.holds_file(start, file.length, have);
            // Its every piece was verified from the file itself (resumed
            // or reused): it exists, and a stat per file of a tree is no
            // small part of a repeat deploy.
            if complete {
                continue;
            }
            if let Some(dir) = path.parent().filter(|d| !made.contains(*d)) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                made.insert(dir.to_path_buf());
            }
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            let len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
            let reserved = reserve
                && file.length >= RESERVE_MIN_BYTES
                && fsutil::reserve(&f, file.length).map_err(|e| Error::io(&path, e))?;
            if !reserved && len != file.length {
                f.set_len(file.length).map_err(|e| Error::io(&path, e))?;
            }
            // Kept open for the writes to come (a tree's files are each
            // opened once, not again by path for their first block).
            let mut open = self.lock_open();
            if open.len() < self.open_limit {
                open.insert(index, Arc::new(f));
            }
        }
        Ok(())
    }

    /// Fails with "no space" naming `staging` when the files below
    /// `RESERVE_MIN_BYTES` still to be written cannot fit in the free
    /// space (each rounded up to 4 KiB blocks).
    fn check_room_for_small_files(&self, staging: &Path, have: &Bitfield) -> Result<()> {
        let mut offset = 0u64;
        let mut needed = 0u64;
        for file in &self.meta.files {
            let start = offset;
            offset += file.length;
            if !file.is_regular() || file.length == 0 || file.length >= RESERVE_MIN_BYTES {
                continue;
            }
            if !self.holds_file(start, file.length, have) {
                needed += file.length.div_ceil(4096) * 4096;
            }
        }
        // A single file's staging path does not exist yet: ask its directory.
        let free = fsutil::available_space(staging)
            .or_else(|| staging.parent().and_then(fsutil::available_space));
        match free {
            Some(free) if free < needed => Err(Error::io(
                staging,
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            )),
            _ => Ok(()),
        }
    }

    /// Whether `have` holds every piece of the file of `len` (> 0) bytes
    /// at `start` in the stream of pieces.
    /// Rule R1 (STATE.md): a staged file that is not wholly verified will be
    /// written, so it must be an inode of its own. One that is a hard link
    /// (an earlier attempt reused an earlier release's file, and that file
    /// changed since) is removed, with every piece of it that had verified,
    /// to be reused or fetched anew; writing to it would change the earlier
    /// release. So is one whose execute bit is not the torrent's (the
    /// earlier attempt was of another torrent): placing would chmod it.
    /// And with `ReuseMode::Copy` every link goes: the application writes
    /// release files in place, and an earlier attempt may have linked.
    /// Repeated until nothing more goes: a file removed takes a piece it
    /// shares with a file before it (an unaligned torrent), which is then
    /// not wholly verified either.
    fn unshare_unverified(
        &self,
        staging: &Path,
        have: &mut Bitfield,
        mode: reuse::ReuseMode,
    ) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        loop {
            let mut removed = false;
            let mut offset = 0u64;
            for (index, file) in self.meta.files.iter().enumerate() {
                let start = offset;
                offset += file.length;
                if !file.is_regular() || file.length == 0 {
                    continue;
                }
                let path = self.file_path(staging, index);
                if let Ok(m) = std::fs::symlink_metadata(&path) {
                    let fits = self.holds_file(start, file.length, have)
                        && (m.mode() & 0o111 != 0) == file.executable
                        && mode != reuse::ReuseMode::Copy;
                    if m.is_file() && m.nlink() > 1 && !fits {
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        for p in self.file_pieces(start, file.length) {
                            have.clear(p);
                        }
                        removed = true;
                    }
                }
            }
            if !removed {
                return Ok(());
            }
        }
    }

    fn holds_file(&self, start: u64, len: u64, have: &Bitfield) -> bool {
        self.file_pieces(start, len).all(|p| have.get(p))
    }

    /// The pieces that hold bytes of the file at `start` of `len` (> 0) bytes.
    fn file_pieces(&self, start: u64, len: u64) -> std::ops::RangeInclusive<usize> {
        let pl = self.layout.piece_length();
        (start / pl) as usize..=((start + len - 1) / pl) as usize
    }

    fn new(meta: Arc<Metainfo>, root: PathBuf, writable: bool) -> Storage {
        Storage {
            layout: meta.layout(),
            meta,
            root: RwLock::new(root),
            writable,
            open: Mutex::new(HashMap::new()),
            open_limit: (fsutil::descriptor_limit() / 2).clamp(OPEN_FILES_MIN, OPEN_FILES_MAX),
            linked: Default::default(),
            linked_from_staging: Default::default(),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn file_path(&self, root: &Path, index: usize) -> PathBuf {
        if self.meta.single_file {
            root.to_path_buf()
        } else {
            self.meta.files[index].path_under(root)
        }
    }

    /// Where file `index` is now (for error messages).
    fn current_path(&self, index: usize) -> PathBuf {
        let root = self.root.read().unwrap_or_else(|e| e.into_inner()).clone();
        self.file_path(&root, index)
    }

    fn file(&self, index: usize) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.lock_open().get(&index) {
            return Ok(f.clone());
        }
        // Opened without the `open` lock: other connections' reads and
        // writes of open files need not wait for a path lookup. The root's
        // read lock is held until the file is open: the final rename
        // (`rename_to`, under the write lock) in between made the path
        // vanish, and a read of a placed download failed the session.
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        let path = self.file_path(&root, index);
        let open = |write: bool| OpenOptions::new().read(true).write(write).open(&path);
        // A linked file is an earlier release's inode, never written; it
        // may be read-only (0444 of a deploy user's), and so may be one an
        // earlier attempt linked: such a file is complete, and only read.
        let file = match open(self.writable && !self.linked.contains(&index)) {
            Err(e) if self.writable && e.kind() == std::io::ErrorKind::PermissionDenied => {
                open(false)?
            }
            opened => opened?,
        };
        drop(root);
        let file = Arc::new(file);
        let mut open = self.lock_open();
        if let Some(f) = open.get(&index) {
            return Ok(f.clone()); // another thread opened it meanwhile
        }
        if open.len() >= self.open_limit {
            if let Some(&evict) = open.keys().next() {
                open.remove(&evict);
            }
        }
        open.insert(index, file.clone());
        Ok(file)
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Arc<File>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads `buf.len()` bytes of piece `piece` from `offset` within it.
    pub fn read(
        &self,
        piece: u32,
        offset: u32,
        buf: &mut [u8],
    ) -> std::result::Result<(), ReadError> {
        let start = piece as u64 * self.layout.piece_length() + offset as u64;
        let mut at = 0usize;
        for span in self.layout.spans(start, buf.len() as u64) {
            let dest = &mut buf[at..at + span.len as usize];
            at += span.len as usize;
            if span.pad {
                dest.fill(0);
            } else {
                self.file(span.file)
                    .and_then(|f| f.read_exact_at(dest, span.file_offset))
                    .map_err(|error| ReadError {
                        file: span.file,
                        error,
                    })?;
            }
        }
        Ok(())
    }

    /// Writes a block at `offset` within piece `piece` (pad bytes are not
    /// written: they are zeros on no disk).
    pub fn write(&self, piece: u32, offset: u32, data: &[u8]) -> Result<()> {
        let start = piece as u64 * self.layout.piece_length() + offset as u64;
        let mut at = 0usize;
        for span in self.layout.spans(start, data.len() as u64) {
            let part = &data[at..at + span.len as usize];
            at += span.len as usize;
            if !span.pad {
                self.file(span.file)
                    .and_then(|f| f.write_all_at(part, span.file_offset))
                    .map_err(|e| Error::io(self.current_path(span.file), e))?;
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of piece `piece` from `offset`, naming the
    /// file in the error.
    fn read_named(&self, piece: u32, offset: u32, buf: &mut [u8]) -> Result<()> {
        self.read(piece, offset, buf)
            .map_err(|e| self.read_error(e))
    }

    /// A failed read, naming the file that failed (a block may span
    /// several, and the first of them may be whole).
    #[cold]
    pub fn read_error(&self, e: ReadError) -> Error {
        Error::io(self.current_path(e.file), e.error)
    }

    /// SHA-1 of a whole piece as it is on disk.
    pub fn hash_piece(&self, piece: u32) -> Result<[u8; 20]> {
        let (_, len) = self.layout.piece_range(piece as usize);
        let mut hasher = Sha1::new();
        let mut buf = vec![0u8; (256 * 1024).min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = buf.len().min((len - done) as usize);
            self.read_named(piece, done as u32, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            done += n as u64;
        }
        Ok(hasher.finalize().into())
    }

    /// SHA-1 of each 16 KiB block of a piece as it is on disk, over the
    /// bytes a request for it covers: a block the padding cuts short is
    /// asked for and sent short, and a copy is judged by its own bytes.
    /// One entry per block (those wholly in padding hash nothing).
    pub fn block_hashes(&self, piece: u32) -> Result<Vec<[u8; 20]>> {
        let (_, len) = self.layout.piece_range(piece as usize);
        let data_end = self.layout.data_end(piece as usize);
        let mut buf = vec![0u8; crate::wire::BLOCK as usize];
        let mut hashes = Vec::new();
        let mut offset = 0u64;
        while offset < len {
            let n = (data_end.saturating_sub(offset)).min(buf.len() as u64) as usize;
            self.read_named(piece, offset as u32, &mut buf[..n])?;
            hashes.push(Sha1::digest(&buf[..n]).into());
            offset += crate::wire::BLOCK as u64;
        }
        Ok(hashes)
    }

    /// Starts writing a verified piece back to disk (a hint; see
    /// `fsutil::start_writeback`).
    pub fn start_writeback(&self, piece: u32) {
        if !self.writable {
            return;
        }
        let (start, len) = self.layout.piece_range(piece as usize);
        for span in self.layout.spans(start, len).filter(|s| !s.pad) {
            if let Ok(f) = self.file(span.file) {
                fsutil::start_writeback(&f, span.file_offset, span.len);
            }
        }
    }

    /// Sets modes and makes links, syncs the data, and renames the staging
    /// path to `dest`. Open files stay valid (a rename keeps the inodes), so
    /// seeding goes on.
    pub fn finish(&self, dest: &Path) -> Result<()> {
        self.stage()?;
        self.rename_to(dest)
    }

    /// Sets modes, makes links and syncs the data where it is (the staging
    /// area): what is left to place it is one rename.
    pub fn stage(&self) -> Result<()> {
        let staging = self.root.read().unwrap_or_else(|e| e.into_inner()).clone();
        if self.meta.single_file {
            let f = self.file(0).map_err(|e| Error::io(&staging, e))?;
            f.sync_data().map_err(|e| Error::io(&staging, e))?;
        } else {
            self.place_tree(&staging)?;
            self.sync_tree(&staging)?;
        }
        Ok(())
    }

    /// Makes what this download wrote durable: the data of every file but
    /// those reuse hard-linked from an earlier release (durable already;
    /// links from a failed attempt's staging area are synced) and every
    /// directory of the staging area (their entries).
    fn sync_tree(&self, staging: &Path) -> Result<()> {
        // Known, not asked of the file system: a stat per file is no small
        // part of a repeat deploy, whose files are nearly all links.
        let files: Vec<usize> = (0..self.meta.files.len())
            .filter(|&i| self.meta.files[i].is_regular())
            .filter(|&i| !self.linked.contains(&i) || self.linked_from_staging.contains(&i))
            .collect();
        match SyncPlan::for_files_written(files.len()) {
            SyncPlan::FileSystem => fsutil::sync_file_system(staging),
            SyncPlan::Each => self.sync_each(staging, &files, &tree_dirs(staging)?),
        }
    }

    /// Syncs `files` and `dirs` one by one, many at once, so that a
    /// journalling file system commits them together.
    fn sync_each(&self, staging: &Path, files: &[usize], dirs: &[PathBuf]) -> Result<()> {
        use rayon::prelude::*;
        let sync = || -> Result<()> {
            files.par_iter().try_for_each(|&index| -> Result<()> {
                let path = self.file_path(staging, index);
                let f = self.file(index).map_err(|e| Error::io(&path, e))?;
                f.sync_data().map_err(|e| Error::io(&path, e))
            })?;
            dirs.par_iter().try_for_each(|dir| fsutil::sync_dir(dir))
        };
        match rayon::ThreadPoolBuilder::new()
            .num_threads(SYNC_THREADS)
            .build()
        {
            Ok(pool) => pool.install(sync),
            Err(_) => sync(),
        }
    }

    /// Renames the (staged) data to `dest`, which must not exist, and syncs
    /// its directory; serving goes on from there.
    pub fn rename_to(&self, dest: &Path) -> Result<()> {
        let mut root = self.root.write().unwrap_or_else(|e| e.into_inner());
        let staging = root.clone();
        // Never over what appeared at `dest` meanwhile (rename(2) would
        // replace an empty directory or a file).
        fsutil::rename_no_replace(&staging, dest).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::InvalidArgument(format!(
                    "{}: appeared while downloading; the verified download stays at {}",
                    dest.display(),
                    staging.display()
                ))
            } else {
                Error::io(dest, e)
            }
        })?;
        *root = dest.to_path_buf();
        drop(root);
        if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::sync_dir(dir)?;
        }
        Ok(())
    }

    /// Files get the torrent's execute bit and links are made, each
    /// relative to its own directory (BEP 47 targets are relative to the
    /// root, and validated to stay inside it).
    fn place_tree(&self, staging: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        for (index, file) in self.meta.files.iter().enumerate() {
            let path = self.file_path(staging, index);
            // A hard link is an earlier release's inode, linked only when
            // its mode fits: a chmod would change that release (rule R1).
            // So is a file an earlier attempt linked into the staging area
            // (resumed as verified, not in `linked`, and unshared unless
            // its execute bit fits). An inode of our own gets the
            // torrent's execute bit either way (rule R2): an earlier
            // attempt of another torrent may have set it.
            if file.is_regular() && !self.linked.contains(&index) {
                let m = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
                let mode = m.permissions().mode();
                let placed = if file.executable && mode & 0o111 == 0 {
                    executable_mode(mode)
                } else if !file.executable && mode & 0o111 != 0 {
                    mode & !0o111
                } else {
                    mode
                };
                if placed != mode && m.nlink() > 1 {
                    // Linked since it was staged (a deploy beside this one
                    // reused our staging area): the chmod is ours alone.
                    private_copy(&path, placed)?;
                } else if placed != mode {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(placed))
                        .map_err(|e| Error::io(&path, e))?;
                }
            }
            let Some(target) = &file.symlink else {
                continue;
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            let relative = relative_link(&file.path, target);
            if std::fs::symlink_metadata(&path).is_ok() {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
            std::os::unix::fs::symlink(&relative, &path).map_err(|e| Error::io(&path, e))?;
        }
        // Before the sync, which makes their entries durable too.
        for path in self.meta.empty_dirs_under(staging) {
            std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

/// Rule R2 (STATE.md): a staging area left by an earlier run, perhaps of
/// another torrent for the same destination, gets the torrent's shape
/// before anything in it counts: entries the torrent does not have are
/// removed (they would be renamed into the release), and a file longer
/// than the torrent says is cut to its length (checking reads only the
/// torrent's bytes, so an old tail would stay), or removed when it is a
/// hard link into an earlier release (rule R1).
fn prune_to_torrent(meta: &Metainfo, staging: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let remove = |path: &Path, m: &std::fs::Metadata| -> Result<()> {
        if m.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        }
        .map_err(|e| Error::io(path, e))
    };
    let cut = |path: &Path, m: &std::fs::Metadata, len: u64| -> Result<()> {
        if m.len() <= len {
            return Ok(());
        }
        if m.nlink() > 1 {
            return std::fs::remove_file(path).map_err(|e| Error::io(path, e));
        }
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(len))
            .map_err(|e| Error::io(path, e))
    };
    let Ok(top) = std::fs::symlink_metadata(staging) else {
        return Ok(());
    };
    if meta.single_file {
        return match top.is_file() {
            true => cut(staging, &top, meta.files[0].length),
            false => remove(staging, &top),
        };
    }
    if !top.is_dir() {
        return remove(staging, &top);
    }
    let TreeShape { files, dirs } = TreeShape::of(meta);
    let mut walk = walkdir::WalkDir::new(staging)
        .min_depth(1)
        .follow_links(false)
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(|e| Error::walk(staging, e))?;
        let path = entry.path();
        let rel = path.strip_prefix(staging).unwrap_or(path);
        let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
        let keep = match files.get(rel) {
            Some(Some(len)) if m.is_file() => {
                cut(path, &m, *len)?;
                true
            }
            Some(None) => m.file_type().is_symlink(), // place_tree makes it anew
            Some(Some(_)) => false,
            None => m.is_dir() && dirs.contains(rel),
        };
        if !keep {
            remove(path, &m)?;
            if m.is_dir() {
                walk.skip_current_dir();
            }
        }
    }
    Ok(())
}

/// What a multi-file torrent puts where, below its root: regular files
/// with their lengths, links (`None`), and the directories above them and
/// its empty ones.
struct TreeShape {
    files: std::collections::HashMap<PathBuf, Option<u64>>,
    dirs: std::collections::HashSet<PathBuf>,
}

impl TreeShape {
    fn of(meta: &Metainfo) -> TreeShape {
        let mut shape = TreeShape {
            files: Default::default(),
            dirs: Default::default(),
        };
        for f in meta
            .files
            .iter()
            .filter(|f| f.symlink.is_some() || f.is_regular())
        {
            let rel: PathBuf = f.path.iter().collect();
            let mut up = rel.parent();
            while let Some(d) = up.filter(|d| !d.as_os_str().is_empty()) {
                shape.dirs.insert(d.to_path_buf());
                up = d.parent();
            }
            shape.files.insert(rel, f.is_regular().then_some(f.length));
        }
        for dir in &meta.empty_dirs {
            for depth in 1..=dir.len() {
                shape.dirs.insert(dir[..depth].iter().collect());
            }
        }
        shape
    }
}

/// Where a tree at `root` whose data verified differs from what placing
/// the torrent makes (rule R3): an entry it lacks or has too many, a link
/// where a file or a directory should be or one to elsewhere, an execute
/// bit. `None` when it is the torrent's tree, as a download would leave it.
pub fn tree_difference(meta: &Metainfo, root: &Path) -> Result<Option<String>> {
    use std::os::unix::fs::MetadataExt;
    if meta.single_file {
        return Ok(None); // its data is all it is
    }
    for file in meta.files.iter().filter(|f| !f.pad) {
        let path = file.path_under(root);
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            return Ok(Some(format!("{} is missing", path.display())));
        };
        let differs = match &file.symlink {
            Some(target) => match std::fs::read_link(&path) {
                Ok(text) if text == relative_link(&file.path, target) => None,
                Ok(_) => Some("links elsewhere"),
                Err(_) => Some("should be a symbolic link"),
            },
            None if !m.is_file() => Some("should be a regular file"),
            None if (m.mode() & 0o111 != 0) != file.executable => Some(match file.executable {
                true => "should be executable",
                false => "should not be executable",
            }),
            None => None,
        };
        if let Some(what) = differs {
            return Ok(Some(format!("{} {what}", path.display())));
        }
    }
    for path in meta.empty_dirs_under(root) {
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Ok(Some(format!("{} should be a directory", path.display())));
        }
    }
    let shape = TreeShape::of(meta);
    for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        let entry = entry.map_err(|e| Error::walk(root, e))?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        // Files and links were checked above; a directory must be one, not
        // a link to one (what is under it read well through the link).
        let differs = match (shape.files.contains_key(rel), shape.dirs.contains(rel)) {
            (true, _) => None,
            (false, true) if entry.file_type().is_dir() => None,
            (false, true) => Some("should be a directory"),
            (false, false) => Some("is not in the torrent"),
        };
        if let Some(what) = differs {
            return Ok(Some(format!("{} {what}", entry.path().display())));
        }
    }
    Ok(None)
}

/// Every directory of the tree at `root`, itself first. One that cannot
/// be read fails the sync, named: it could not be synced either.
fn tree_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| Error::walk(root, e))?;
        if entry.file_type().is_dir() {
            dirs.push(entry.into_path());
        }
    }
    Ok(dirs)
}

/// The text of a link at `link` to `target` (both below the root): from
/// the link's directory, up past what they do not share, then down. The
/// link's directories are real ones (validation refuses entries under a
/// link), so `..` from there means what it says.
fn relative_link(link: &[String], target: &[String]) -> PathBuf {
    let dir = &link[..link.len().saturating_sub(1)];
    let common = dir.iter().zip(target).take_while(|(a, b)| a == b).count();
    let mut relative = PathBuf::new();
    for _ in common..dir.len() {
        relative.push("..");
    }
    relative.extend(&target[common..]);
    if relative.as_os_str().is_empty() {
        // The link's own directory.
        relative.push(".");
    }
    relative
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

/// Replaces the file at `path` with a copy of its own, of `mode`: its
/// inode stays as it is for whoever else links it (rule R1).
fn private_copy(path: &Path, mode: u32) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let copy = path.with_file_name(format!(".{name}.murder-own"));
    std::fs::copy(path, &copy).map_err(|e| Error::io(&copy, e))?;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(&copy, e))?;
    std::fs::rename(&copy, path).map_err(|e| Error::io(path, e))
}

/// An executable's mode from the mode the file was written with (under
/// the umask): execute wherever it may be read, so `umask 077` gives 0700
/// and never widens a private file to 0755.
fn executable_mode(mode: u32) -> u32 {
    mode | ((mode & 0o444) >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rule P4's sync: a tree that wrote many files is synced with one
    /// syncfs, one that wrote a few (the rest links) file by file.
    #[test]
    fn rule_p4_a_tree_of_many_written_files_is_synced_with_one_syncfs() {
        assert_eq!(SyncPlan::for_files_written(3), SyncPlan::Each);
        assert_eq!(
            SyncPlan::for_files_written(SYNC_FILE_SYSTEM_FROM - 1),
            SyncPlan::Each
        );
        assert_eq!(
            SyncPlan::for_files_written(SYNC_FILE_SYSTEM_FROM),
            SyncPlan::FileSystem
        );
        let dir = tempfile::tempdir().unwrap();
        fsutil::sync_file_system(dir.path()).unwrap();
        let gone = dir.path().join("gone");
        let e = fsutil::sync_file_system(&gone).unwrap_err().to_string();
        assert!(e.contains("gone"), "{e}");
    }
    use crate::create::{create_torrent, CreateOptions};

    /// Rule W1 for the final sync: a tree whose directories cannot be
    /// listed fails, named; it was taken as a tree with none to sync.
    #[test]
    fn rule_w1_a_tree_that_cannot_be_listed_fails_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(tree_dirs(dir.path()).unwrap().len(), 2);
        let gone = dir.path().join("gone");
        let e = tree_dirs(&gone).unwrap_err().to_string();
        assert!(e.contains("gone"), "{e}");
    }

    /// Rule R2: an executable is placed executable where it is readable,
    /// under whatever umask wrote it.
    #[test]
    fn rule_r2_an_executable_is_executable_where_it_is_readable() {
        assert_eq!(executable_mode(0o644), 0o755);
        assert_eq!(executable_mode(0o600), 0o700);
        assert_eq!(executable_mode(0o640), 0o750);
        assert_eq!(executable_mode(0o444), 0o555);
    }

    #[test]
    fn links_are_made_relative_to_their_own_directory() {
        let v = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            relative_link(&v("lib/current"), &v("lib/d0")),
            PathBuf::from("d0")
        );
        assert_eq!(
            relative_link(&v("bin/one"), &v("assets/one.bin")),
            PathBuf::from("../assets/one.bin")
        );
        assert_eq!(relative_link(&v("top"), &v("a/b")), PathBuf::from("a/b"));
        assert_eq!(
            relative_link(&v("a/b/c/l"), &v("a/x")),
            PathBuf::from("../../x")
        );
        // A link to its own directory (`include/self -> .`): an empty
        // path, which symlink(2) refuses, failed every host at the end.
        assert_eq!(relative_link(&v("d/self"), &v("d")), PathBuf::from("."));
    }

    /// Writes `files` (path, bytes) under `src` and makes their torrent, of
    /// 16 KiB pieces (aligned or not).
    fn tree_torrent(src: &Path, files: &[(&str, Vec<u8>)], align: bool) -> Arc<Metainfo> {
        for (path, bytes) in files {
            let p = src.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }
        torrent_of(src, align)
    }

    /// The torrent of what `src` holds, in 16 KiB pieces.
    fn torrent_of(src: &Path, align: bool) -> Arc<Metainfo> {
        let mut opts = CreateOptions::new("t:1");
        opts.piece_length = Some(16384);
        opts.align = align;
        Arc::new(create_torrent(src, &opts, &Progress::new()).unwrap())
    }

    /// A download's storage of `meta` to `dest`, reusing nothing.
    fn download_to(meta: &Arc<Metainfo>, dest: &Path) -> Storage {
        let reuse = ReuseConfig::default();
        Storage::for_download(meta.clone(), dest, &Progress::new(), true, &reuse)
            .unwrap()
            .0
    }

    /// Rule R1 at placing: a staged file that someone else hard-linked
    /// after it was staged (a deploy beside this one reusing our staging
    /// area) keeps its mode for them; the placed release gets a copy of its
    /// own with the torrent's execute bit.
    #[test]
    fn rule_r1_placing_chmods_a_file_linked_since_staging_only_in_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/run"), b"#!/bin/sh\necho run\n").unwrap();
        std::fs::set_permissions(src.join("bin/run"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let meta = torrent_of(&src, true);
        assert!(meta.files.iter().any(|f| f.executable));
        let dest = dir.path().join("out/release");
        let storage = download_to(&meta, &dest);
        let bytes = std::fs::read(src.join("bin/run")).unwrap();
        storage.write(0, 0, &bytes).unwrap();
        let staged = storage.current_path(0);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let written = mode(&staged);
        assert_eq!(written & 0o111, 0, "written without an execute bit");
        let other = dir.path().join("other-release-run");
        std::fs::hard_link(&staged, &other).unwrap();
        storage.finish(&dest).unwrap();
        assert_eq!(
            mode(&other),
            written,
            "the other release's file was chmodded"
        );
        assert_eq!(mode(&dest.join("bin/run")), executable_mode(written));
        assert_eq!(std::fs::read(dest.join("bin/run")).unwrap(), bytes);
    }

    /// Rule P4's rename: a destination that appeared while downloading
    /// (here an empty directory, which rename(2) would replace) is refused,
    /// naming where the verified download stays.
    #[test]
    fn a_destination_that_appeared_while_downloading_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let meta = tree_torrent(&src, &[("a.txt", vec![7u8; 100])], true);
        let dest = dir.path().join("out/release");
        let storage = download_to(&meta, &dest);
        storage.write(0, 0, &[7u8; 100]).unwrap();
        std::fs::create_dir(&dest).unwrap();
        let e = storage.finish(&dest).unwrap_err().to_string();
        assert!(e.contains("appeared while downloading"), "{e}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        assert!(
            storage.current_path(0).exists(),
            "the staged download is kept"
        );
    }

    /// Rule R2: a staging area an earlier run left for the same
    /// destination, of another torrent, ends as this torrent's tree: a file
    /// this one lacks is not renamed into the release, and a file that
    /// shrank does not keep its old tail.
    #[test]
    fn rule_r2_a_staging_area_of_another_torrent_takes_this_ones_shape() {
        let dir = tempfile::tempdir().unwrap();
        let make = |name: &str, files: &[(&str, usize)]| {
            let src = dir.path().join(name);
            let files: Vec<_> = files
                .iter()
                .map(|&(path, len)| (path, vec![path.len() as u8; len]))
                .collect();
            let meta = tree_torrent(&src, &files, true);
            (src, meta)
        };
        let (src1, one) = make(
            "one",
            &[("app.jar", 3 << 20), ("old/gone.rb", 5_000), ("keep", 100)],
        );
        let (src2, two) = make("two", &[("app.jar", 1 << 20), ("keep", 100)]);
        let dest = dir.path().join("out/release");
        // The first torrent's download gets everything and "crashes".
        let first = download_to(&one, &dest);
        let seed1 = Storage::for_seeding(one.clone(), &src1);
        let mut buf = vec![0u8; 16384];
        for piece in 0..one.piece_count() as u32 {
            let (_, len) = one.layout().piece_range(piece as usize);
            seed1.read(piece, 0, &mut buf[..len as usize]).unwrap();
            first.write(piece, 0, &buf[..len as usize]).unwrap();
        }
        drop(first);
        // The second torrent, to the same destination.
        let second = download_to(&two, &dest);
        let seed2 = Storage::for_seeding(two.clone(), &src2);
        for piece in 0..two.piece_count() as u32 {
            let (_, len) = two.layout().piece_range(piece as usize);
            seed2.read(piece, 0, &mut buf[..len as usize]).unwrap();
            second.write(piece, 0, &buf[..len as usize]).unwrap();
        }
        second.finish(&dest).unwrap();
        assert!(
            !dest.join("old").exists(),
            "a file of the other torrent was placed"
        );
        assert_eq!(
            std::fs::metadata(dest.join("app.jar")).unwrap().len(),
            1 << 20,
            "the old tail stayed"
        );
        assert_eq!(
            std::fs::read(dest.join("app.jar")).unwrap(),
            std::fs::read(src2.join("app.jar")).unwrap()
        );
    }

    #[test]
    fn a_download_is_staged_then_renamed_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let files = [("a", vec![1u8; 40_000]), ("sub/b", vec![2u8; 30_000])];
        let meta = tree_torrent(&src, &files, false);
        let seed = Storage::for_seeding(meta.clone(), &src);
        let dest = dir.path().join("out/release");
        let (storage, have, _) = Storage::for_download(
            meta.clone(),
            &dest,
            &Progress::new(),
            true,
            &ReuseConfig::default(),
        )
        .unwrap();
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
        let (storage, have, _) = Storage::for_download(
            meta.clone(),
            &dest,
            &Progress::new(),
            true,
            &ReuseConfig::default(),
        )
        .unwrap();
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

    /// A read that fails in the second file of a piece names that file, not
    /// the piece's first (a seed whose `app/x.rb` was cut short once said
    /// "README: failed to fill whole buffer").
    #[test]
    fn a_failed_read_names_the_file_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("rel");
        let files = [("a", vec![1u8; 1000]), ("sub/b", vec![2u8; 10_000])];
        let meta = tree_torrent(&src, &files, false);
        std::fs::write(src.join("sub/b"), vec![2u8; 10]).unwrap();
        let seed = Storage::for_seeding(meta, &src);
        let mut buf = vec![0u8; 11_000];
        let e = seed.read(0, 0, &mut buf).unwrap_err();
        let named = seed.read_error(e).to_string();
        assert!(named.contains("sub/b"), "{named}");
    }
}
