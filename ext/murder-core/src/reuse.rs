//! Content a host holds already: files of earlier releases, found by
//! content (size, then piece hashes), not by name, so a moved or renamed
//! file counts too. Every reused piece is hashed from the bytes it will be
//! (a hard link's own inode, or the buffer about to be copied) and checked
//! against the new torrent's SHA-1 before it counts; a name or a timestamp
//! is never trusted.
//!
//! A file whose every piece is its own (an aligned tree's files are) and
//! matches is hard-linked into the staging area, as `rsync --link-dest`
//! does, when it is on the same file system and its mode fits; otherwise,
//! or with `ReuseMode::Copy`, the pieces that match are copied. Nothing is
//! ever written to a file of an earlier release.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use rayon::prelude::*;
use sha1::{Digest, Sha1};
use walkdir::DirEntryExt;

use crate::bitfield::Bitfield;
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::progress::Progress;

/// How reused files land in a new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReuseMode {
    /// Hard links where possible (old and new release share the file).
    #[default]
    Link,
    /// Copies, for applications that change release files in place.
    Copy,
}

/// Where to look for content and how to bring it in.
#[derive(Debug, Clone, Default)]
pub struct ReuseConfig {
    /// Directories searched (recursively, links not followed).
    pub dirs: Vec<PathBuf>,
    pub mode: ReuseMode,
}

/// What reuse brought in.
#[derive(Debug, Clone, Default)]
pub struct Reused {
    /// Pieces verified from reused content.
    pub pieces: Bitfield,
    /// The torrent's indices of the files hard-linked (their inodes belong
    /// to an earlier release or attempt: never written, never chmodded).
    pub linked: Vec<usize>,
    /// Those of `linked` whose source lies in a staging area (`.NAME.part`,
    /// a failed attempt's): not durable as a release's are, so synced
    /// with the rest.
    pub linked_from_staging: Vec<usize>,
    pub files_copied: usize,
    pub bytes: u64,
    /// Earlier files opened and read (to verify them, or to hash their
    /// first piece when looking for a renamed file).
    pub files_read: usize,
}

/// A file that might hold some torrent file's content.
#[derive(Debug)]
struct Candidate {
    path: PathBuf,
    len: u64,
    executable: bool,
    mtime: i64,
    /// In a staging area (`.NAME.part`): a failed attempt's, whose data
    /// may not be on disk yet.
    staged: bool,
}

/// Whether `path`, below the searched directory `dir`, lies in a staging
/// area.
fn in_staging_area(dir: &Path, path: &Path) -> bool {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .components()
        .any(|c| crate::storage::is_staging_name(c.as_os_str()))
}

/// The files of earlier releases, one entry per inode, found by size and
/// by size and name (rule R4: a lookup, not a scan, per new file).
struct Index {
    files: Vec<Candidate>,
    /// Indices into `files` by size, newest first.
    by_size: HashMap<u64, Vec<usize>>,
    /// Indices into `files` by size and file name, newest first: where a
    /// file of the same path is.
    by_name: HashMap<(u64, OsString), Vec<usize>>,
}

impl Index {
    fn build(dirs: &[PathBuf], skip: &[&Path]) -> Index {
        let mut files = Vec::new();
        let mut inodes = std::collections::HashSet::new();
        for dir in dirs {
            // One file system per directory searched, so that the inode
            // number its listing gives tells a file seen already (in
            // another release: a hard link) without a stat. Capistrano
            // keeps five releases, nearly all links of the same inodes.
            let Ok(dev) = std::fs::metadata(dir).map(|m| m.dev()) else {
                continue;
            };
            let walk = walkdir::WalkDir::new(dir)
                .follow_links(false)
                .same_file_system(true)
                .into_iter();
            for entry in walk.filter_entry(|e| !skip.iter().any(|s| e.path() == *s)) {
                let Ok(entry) = entry else { continue };
                if !entry.file_type().is_file() || inodes.contains(&(dev, entry.ino())) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                if meta.len() == 0 || !inodes.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                files.push(Candidate {
                    staged: in_staging_area(dir, entry.path()),
                    path: entry.into_path(),
                    len: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                    mtime: meta.mtime(),
                });
            }
        }
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].mtime));
        let mut by_size: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut by_name: HashMap<(u64, OsString), Vec<usize>> = HashMap::new();
        for i in order {
            let c = &files[i];
            by_size.entry(c.len).or_default().push(i);
            if let Some(name) = c.path.file_name() {
                by_name.entry((c.len, name.to_owned())).or_default().push(i);
            }
        }
        Index {
            files,
            by_size,
            by_name,
        }
    }

    /// Candidates of `len` bytes whose path ends in `suffix`, newest first.
    fn same_path<'a>(&'a self, len: u64, suffix: &'a Path) -> impl Iterator<Item = usize> + 'a {
        let name = suffix.file_name().map(OsStr::to_owned).unwrap_or_default();
        self.by_name
            .get(&(len, name))
            .into_iter()
            .flatten()
            .copied()
            .filter(move |&c| self.files[c].path.ends_with(suffix))
    }
}

/// The pieces that hold data of file `index` and of no other file (pad
/// bytes after it aside): those it can bring in alone. `None` when some
/// piece of the file mixes in another file's data (an unaligned torrent),
/// or when the file does not start at a piece (a pad file ending inside
/// the piece before it: its pieces are hashed from the piece's start).
fn own_pieces(layout: &Layout, file_offset: u64, len: u64, index: usize) -> Option<(usize, usize)> {
    let pl = layout.piece_length();
    if file_offset % pl != 0 {
        return None;
    }
    let first = (file_offset / pl) as usize;
    let last = ((file_offset + len - 1) / pl) as usize;
    for piece in [first, last] {
        let (start, plen) = layout.piece_range(piece);
        if layout.spans(start, plen).any(|s| !s.pad && s.file != index) {
            return None;
        }
    }
    Some((first, last))
}

/// Where one torrent file lies in the stream of pieces.
#[derive(Clone, Copy)]
struct Span {
    offset: u64,
    len: u64,
}

impl Span {
    /// The bytes of `piece` that are this file's: (offset in the file, count).
    fn part(&self, layout: &Layout, piece: usize) -> (u64, usize) {
        let (start, plen) = layout.piece_range(piece);
        let end = (self.offset + self.len).min(start + plen);
        (start - self.offset, (end - start) as usize)
    }
}

/// SHA-1 of piece `piece` with this file's part of it read from `file`
/// (zeros for the padding after it); the piece's bytes are left in `buf`.
fn read_piece(
    layout: &Layout,
    file: &File,
    span: Span,
    piece: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<[u8; 20]> {
    let (_, plen) = layout.piece_range(piece);
    buf.clear();
    buf.resize(plen as usize, 0);
    let (at, n) = span.part(layout, piece);
    file.read_exact_at(&mut buf[..n], at)?;
    Ok(Sha1::digest(&buf[..]).into())
}

/// SHA-1 of the first `len` bytes of `file` (exactly `len`: a shorter
/// file is an error).
fn file_sha1(file: &File, len: u64, buf: &mut Vec<u8>) -> std::io::Result<[u8; 20]> {
    const CHUNK: usize = 256 << 10;
    buf.resize(CHUNK.min(len as usize).max(1), 0);
    let mut sha = Sha1::new();
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        sha.update(&buf[..n]);
        at += n as u64;
    }
    Ok(sha.finalize().into())
}

/// Brings in what `config.dirs` hold of `meta` into the staging area at
/// `staging` (whose files may not exist yet), for the pieces not in `have`.
pub fn reuse(
    meta: &Metainfo,
    staging: &Path,
    have: &Bitfield,
    config: &ReuseConfig,
    skip: &[&Path],
    progress: &Progress,
) -> Result<Reused> {
    let layout = meta.layout();
    let mut reused = Reused {
        pieces: Bitfield::new(meta.piece_count()),
        ..Reused::default()
    };
    if config.dirs.is_empty() || meta.single_file {
        return Ok(reused);
    }
    let index = Index::build(&config.dirs, skip);
    let mut offset = 0u64;
    let mut jobs = Vec::new();
    for (i, f) in meta.files.iter().enumerate() {
        if f.is_regular() && f.length > 0 && index.by_size.contains_key(&f.length) {
            if let Some((first, last)) = own_pieces(&layout, offset, f.length, i) {
                if (first..=last).any(|p| !have.get(p)) {
                    jobs.push(Job {
                        file: i,
                        span: Span {
                            offset,
                            len: f.length,
                        },
                        first,
                        last,
                    });
                }
            }
        }
        offset += f.length;
    }
    // The staging directories the candidates land in, each made once
    // (not a mkdir and a stat per file: a tree has thousands).
    let staged = |i: usize| meta.files[i].path_under(staging);
    let dirs: std::collections::BTreeSet<PathBuf> = jobs
        .iter()
        .filter_map(|job| staged(job.file).parent().map(Path::to_path_buf))
        .collect();
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let reads = AtomicUsize::new(0);
    let try_candidate = |job: &Job, c: usize, buf: &mut Vec<u8>| -> Result<Outcome> {
        let entry = &meta.files[job.file];
        let target = Target {
            dest: &staged(job.file),
            executable: entry.executable,
            sha1: entry.sha1,
            span: job.span,
            first: job.first,
            last: job.last,
        };
        reads.fetch_add(1, Ordering::Relaxed);
        bring_in(
            meta,
            &layout,
            &index.files[c],
            &target,
            have,
            config.mode,
            buf,
        )
    };
    // First the file at the same path of an earlier release: an everyday
    // release changes few, so this settles nearly every file.
    let same_path: Vec<Option<(Outcome, usize)>> = jobs
        .par_iter()
        .map(|job| {
            if progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let suffix: PathBuf = meta.files[job.file].path.iter().collect();
            let mut buf = Vec::new();
            for c in index.same_path(job.span.len, &suffix) {
                let outcome = try_candidate(job, c, &mut buf)?;
                if !outcome.pieces.is_empty() {
                    return Ok(Some((outcome, c)));
                }
            }
            Ok(None)
        })
        .collect::<Result<_>>()?;
    // Then renamed and moved files: an earlier file of the size that starts
    // as this one does (`Job::head`). Each candidate is read for that at
    // most once (rule R4), when the first file of its size looks for a
    // rename; one that a file verified above is known to hold that file's.
    let known: HashMap<(usize, Head), [u8; 20]> = jobs
        .iter()
        .zip(&same_path)
        .filter_map(|(job, found)| {
            let (outcome, c) = found.as_ref()?;
            let (head, hash) = job.head(meta, &layout);
            let holds = match head {
                Head::Piece(_) => outcome.pieces.first() == Some(&job.first),
                Head::File => outcome.pieces.len() == job.last - job.first + 1,
            };
            holds.then_some(((*c, head), hash))
        })
        .collect();
    // By size and the kind of head, then by its hash: candidates newest
    // first.
    type ByHead = HashMap<[u8; 20], Vec<usize>>;
    let by_head: HashMap<(u64, Head), OnceLock<ByHead>> = jobs
        .iter()
        .zip(&same_path)
        .filter(|(_, found)| found.is_none())
        .map(|(job, _)| ((job.span.len, job.head(meta, &layout).0), OnceLock::new()))
        .collect();
    let results: Vec<Outcome> = jobs
        .par_iter()
        .zip(same_path)
        .map(|(job, found)| {
            if let Some((outcome, _)) = found {
                return Ok(outcome);
            }
            if progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let suffix: PathBuf = meta.files[job.file].path.iter().collect();
            let mut buf = Vec::new();
            let (head, expected) = job.head(meta, &layout);
            let groups = by_head[&(job.span.len, head)].get_or_init(|| {
                let mut read = |c: usize| {
                    reads.fetch_add(1, Ordering::Relaxed);
                    let file = File::open(&index.files[c].path).ok()?;
                    match head {
                        Head::Piece(_) => read_piece(&layout, &file, job.span, job.first, &mut buf),
                        Head::File => file_sha1(&file, job.span.len, &mut buf),
                    }
                    .ok()
                };
                let mut groups = ByHead::new();
                for &c in &index.by_size[&job.span.len] {
                    let hash = match known.get(&(c, head)) {
                        Some(&hash) => Some(hash),
                        None => read(c),
                    };
                    if let Some(hash) = hash {
                        groups.entry(hash).or_default().push(c);
                    }
                }
                groups
            });
            let candidates = groups.get(&expected).cloned().unwrap_or_default();
            for c in candidates {
                if index.files[c].path.ends_with(&suffix) {
                    continue; // tried first, above
                }
                let outcome = try_candidate(job, c, &mut buf)?;
                if !outcome.pieces.is_empty() {
                    return Ok(outcome);
                }
            }
            Ok(Outcome::default())
        })
        .collect::<Result<_>>()?;
    reused.files_read = reads.into_inner();
    for (outcome, &Job { file: i, .. }) in results.into_iter().zip(&jobs) {
        if outcome.linked {
            reused.linked.push(i);
            if outcome.staged {
                reused.linked_from_staging.push(i);
            }
        }
        for p in &outcome.pieces {
            reused.pieces.set(*p);
            reused.bytes += layout.data_end(*p);
        }
        reused.files_copied += (!outcome.linked && !outcome.pieces.is_empty()) as usize;
    }
    Ok(reused)
}

/// A torrent file that earlier files may hold: where it lies and which
/// pieces are its own.
struct Job {
    file: usize,
    span: Span,
    first: usize,
    last: usize,
}

/// What tells earlier files of one size apart by how they start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Head {
    /// The hash of the first piece, of this length (the torrent's last
    /// piece may be short).
    Piece(u64),
    /// The file's own SHA-1 (BEP 47), for a file shorter than a piece:
    /// its piece is mostly padding, hashed for nothing.
    File,
}

impl Job {
    /// How this file is looked for among earlier files, and the hash it
    /// must have.
    fn head(&self, meta: &Metainfo, layout: &Layout) -> (Head, [u8; 20]) {
        let plen = layout.piece_range(self.first).1;
        match meta.files[self.file].sha1 {
            Some(sha1) if self.span.len < plen => (Head::File, sha1),
            _ => (Head::Piece(plen), meta.pieces[self.first]),
        }
    }
}

#[derive(Default)]
struct Outcome {
    pieces: Vec<usize>,
    linked: bool,
    /// Linked from a candidate in a staging area.
    staged: bool,
}

/// One torrent file to bring in: where it goes and which pieces are its.
struct Target<'a> {
    dest: &'a Path,
    executable: bool,
    /// The file's own SHA-1 (BEP 47), when the torrent gives it.
    sha1: Option<[u8; 20]>,
    span: Span,
    first: usize,
    last: usize,
}

/// Brings what candidate `c` holds of one torrent file to its staging
/// path: a hard link when every piece matches and the mode fits, else a
/// copy of the pieces that match (each hashed from the very bytes written).
fn bring_in(
    meta: &Metainfo,
    layout: &Layout,
    c: &Candidate,
    t: &Target<'_>,
    have: &Bitfield,
    mode: ReuseMode,
    buf: &mut Vec<u8>,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let pieces = t.first..=t.last;
    let untouched = pieces.clone().all(|p| !have.get(p));
    if mode == ReuseMode::Link && untouched && c.executable == t.executable {
        // A file there already (an earlier attempt's) holds none of the
        // pieces (`untouched`): the link replaces it.
        let linked = match std::fs::hard_link(&c.path, t.dest) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(t.dest);
                std::fs::hard_link(&c.path, t.dest)
            }
            other => other,
        };
        if linked.is_ok() {
            // The link is the candidate's own inode: check its bytes now.
            let linked = File::open(t.dest).map_err(|e| Error::io(t.dest, e))?;
            // Still the new file's size (it may have changed since the index
            // saw it), and its bytes the torrent's: by the file's SHA-1 when
            // the torrent gives it (under the info-hash; piece hashes would
            // also hash the zeros that pad its last piece, most of the work
            // for a tree of small files), else piece by piece.
            let same_size = linked.metadata().map(|m| m.len()).ok() == Some(t.span.len);
            let all = same_size
                && match t.sha1 {
                    Some(expected) => file_sha1(&linked, t.span.len, buf).ok() == Some(expected),
                    None => pieces.clone().all(|p| {
                        read_piece(layout, &linked, t.span, p, buf).ok() == Some(meta.pieces[p])
                    }),
                };
            if all {
                outcome.pieces = pieces.collect();
                outcome.linked = true;
                outcome.staged = c.staged;
                return Ok(outcome);
            }
            // Changed since it was deployed: never write through the link.
            std::fs::remove_file(t.dest).map_err(|e| Error::io(t.dest, e))?;
        }
    }
    let Ok(source) = File::open(&c.path) else {
        return Ok(outcome);
    };
    let mut target: Option<File> = None;
    for p in pieces {
        if have.get(p) {
            continue;
        }
        match read_piece(layout, &source, t.span, p, buf) {
            Ok(hash) if hash == meta.pieces[p] => {}
            _ => continue,
        }
        let file = match &target {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(t.dest)
                    .map_err(|e| Error::io(t.dest, e))?;
                if f.metadata().map(|m| m.len()).ok() != Some(t.span.len) {
                    f.set_len(t.span.len).map_err(|e| Error::io(t.dest, e))?;
                }
                target.insert(f)
            }
        };
        // The bytes hashed are the bytes written.
        let (at, n) = t.span.part(layout, p);
        file.write_all_at(&buf[..n], at)
            .map_err(|e| Error::io(t.dest, e))?;
        outcome.pieces.push(p);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that a pad file ends in front of, inside a piece, is not
    /// brought in piece by piece: `Span::part` measures from the piece's
    /// start, which lies before the file (an underflow: a panic in a debug
    /// build, a read at a wild offset in a release one).
    #[test]
    fn a_file_that_starts_inside_a_piece_is_not_its_own() {
        // [pad 8 KiB][x 40 KiB][y 16 KiB], pieces of 16 KiB.
        let layout = Layout::new([(8192, true), (40960, false), (16384, false)], 16384);
        assert_eq!(own_pieces(&layout, 8192, 40960, 1), None);
        assert_eq!(own_pieces(&layout, 49152, 16384, 2), Some((3, 3)));
    }
}
