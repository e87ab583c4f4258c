//! Making a torrent of a file or a directory tree (Twitter's
//! `murder_make_torrent.py FILE host:port OUT`, on every core).
//!
//! A tree can be made *aligned* (BEP 47): every file starts on a piece
//! boundary, with pad files between them; executables carry `x`, symbolic
//! links are entries of their own (`l` and `symlink path`, only to paths
//! inside the tree). Then each file's pieces depend on that file alone: a
//! host can reuse a file it holds already, and the deployer can remember
//! what each file hashed to (`hash_cache`) and hash only what changed.

use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::hash_cache::{FileHashes, FileKey, HashCache};
use crate::hashing::{hash_pieces, DataSource};
use crate::layout::Layout;
use crate::metainfo::{FileEntry, Metainfo, NewInfo, MAX_PIECE_LENGTH};
use crate::progress::Progress;

pub const MIN_AUTO_PIECE_LENGTH: u64 = 32 << 10;
pub const MAX_AUTO_PIECE_LENGTH: u64 = 16 << 20;
/// The largest automatic piece length of an aligned tree: a small file
/// should not drag a large piece (and its hashing, and a host's reuse
/// check) with it.
pub const MAX_ALIGNED_PIECE_LENGTH: u64 = 1 << 20;
/// The automatic piece length aims at no more pieces than this.
const TARGET_MAX_PIECES: u64 = 2000;

#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// `host:port` of the tracker, or a full announce URL.
    pub tracker: String,
    /// More trackers (BEP 12 `announce-list`, one tier each after the
    /// first): peers announce to all, so a deploy survives any one of them.
    pub more_trackers: Vec<String>,
    /// Bytes per piece; `None` picks one from the size.
    pub piece_length: Option<u64>,
    /// BEP 27: peers only from the tracker.
    pub private: bool,
    pub comment: Option<String>,
    /// A tree with every file on a piece boundary (BEP 47 pad files),
    /// executables marked and symbolic links kept as links.
    pub align: bool,
    /// Where to remember what each file of an aligned tree hashed to.
    pub hash_cache: Option<PathBuf>,
    /// Names (globs, e.g. `.git*`) of files and directories an aligned tree
    /// leaves out, wherever they are.
    pub exclude: Vec<String>,
    /// Files this run writes, which a tree must not hold: the .torrent
    /// being made (a second run would hash the first one's output, then
    /// replace it). Matched by inode, so any spelling of the path counts;
    /// `hash_cache` always counts too.
    pub leave_out: Vec<PathBuf>,
}

impl CreateOptions {
    pub fn new(tracker: impl Into<String>) -> Self {
        CreateOptions {
            tracker: tracker.into(),
            more_trackers: Vec::new(),
            piece_length: None,
            private: false,
            comment: None,
            align: false,
            hash_cache: None,
            exclude: Vec::new(),
            leave_out: Vec::new(),
        }
    }
}

/// What making an aligned torrent found in the hash cache, and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub files_hashed: usize,
    pub files_cached: usize,
    pub bytes_hashed: u64,
}

/// `host:port` becomes `http://host:port/announce`; a URL is kept as it is.
pub fn announce_url(tracker: &str) -> Result<String> {
    let tracker = tracker.trim();
    if tracker.starts_with("http://") || tracker.starts_with("https://") {
        return Ok(tracker.to_string());
    }
    let bad = || {
        Error::InvalidArgument(format!(
            "tracker {tracker:?}: expected HOST:PORT or an http:// URL"
        ))
    };
    let (host, port) = tracker.rsplit_once(':').ok_or_else(bad)?;
    // A name or IPv4 address, or an IPv6 address, bracketed or not (a
    // URL needs the brackets: `2001:db8::5:8998` is host `2001:db8::5`).
    // An address, not its characters: `2001:db8::5` without a port splits
    // into `2001:db8:` and 5, which no URL can hold.
    let ipv6 = |h: &str| h.parse::<std::net::Ipv6Addr>().is_ok();
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) if ipv6(inner) => format!("[{inner}]"),
        None if host.contains(':') && ipv6(host) => format!("[{host}]"),
        None if !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) =>
        {
            host.to_string()
        }
        _ => return Err(bad()),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(format!("http://{host}:{port}/announce")),
        _ => Err(bad()),
    }
}

/// A power of two between 32 KiB and 16 MiB giving 1,000–2,000 pieces
/// where the size allows. Small pieces spread through a swarm sooner (a host
/// can pass a piece on only once it holds all of it): on 16 hosts, 64 KiB
/// pieces of a 64 MiB release finished in 1.25 × T*, 256 KiB ones in 1.32.
pub fn auto_piece_length(total: u64) -> u64 {
    let mut length = MIN_AUTO_PIECE_LENGTH;
    while length < MAX_AUTO_PIECE_LENGTH && total.div_ceil(length) > TARGET_MAX_PIECES {
        length *= 2;
    }
    length
}

/// What one more piece costs, in bytes of hashing: its request and its
/// `have` to every peer, its write, its verification, its share of the
/// picker's and steering's work. Measured, not guessed: on bench/release's
/// tree (3,329 files, 66 MiB, 16 hosts) 16 KiB pieces (6,595 of them, 43 MiB
/// of padding) took 12.5 s first / 4.5 s repeat and 23 CPU s, 64 KiB ones
/// (3,948, 184 MiB of padding, which is hashed but never sent) 10.9 s /
/// 3.9 s and 20 CPU s, 256 KiB ones worse again (14.6 s / 4.8 s): a piece
/// costs about as much as hashing 128 KiB.
const PIECE_COST: u64 = 128 << 10;

/// The piece length of an aligned tree: a power of two from 16 KiB up to
/// what the swarm would pick for its size (`auto_piece_length`, at most
/// `MAX_ALIGNED_PIECE_LENGTH`), the one that hashes the fewest bytes with
/// each file padded to it, counting PIECE_COST for each piece. Every host
/// hashes these bytes when it checks what it reuses: a tree of many small
/// files wants small pieces, one of a few large files larger ones.
pub fn aligned_piece_length(lengths: impl Iterator<Item = u64> + Clone) -> u64 {
    let content: u64 = lengths.clone().sum();
    let most = auto_piece_length(content).min(MAX_ALIGNED_PIECE_LENGTH);
    let mut best = (u64::MAX, most);
    let mut p = 16 << 10;
    while p <= most {
        let pieces: u64 = lengths.clone().map(|len| len.div_ceil(p)).sum();
        let cost = pieces * p + pieces * PIECE_COST;
        if cost < best.0 {
            best = (cost, p);
        }
        p *= 2;
    }
    best.1
}

/// Hashes `path` (a file or a directory) and returns its torrent.
pub fn create_torrent(
    path: &Path,
    options: &CreateOptions,
    progress: &Progress,
) -> Result<Metainfo> {
    create_torrent_with_cache(path, options, progress).map(|(m, _)| m)
}

/// `create_torrent`, also telling how much the hash cache saved.
pub fn create_torrent_with_cache(
    path: &Path,
    options: &CreateOptions,
    progress: &Progress,
) -> Result<(Metainfo, CacheUse)> {
    let announce = announce_url(&options.tracker)?;
    // Only an aligned tree is walked name by name; anywhere else an
    // exclusion would be silently ignored and ship what the caller left out.
    if !options.exclude.is_empty() && !options.align {
        return Err(Error::InvalidArgument(
            "exclude needs an aligned tree (align)".into(),
        ));
    }
    let mut announce_list = Vec::new();
    if !options.more_trackers.is_empty() {
        announce_list.push(vec![announce.clone()]);
        for t in &options.more_trackers {
            announce_list.push(vec![announce_url(t)?]);
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let name = torrent_name(path)?;
    let check_length = |n: u64| -> Result<u64> {
        if (16 << 10..=MAX_PIECE_LENGTH).contains(&n) && n.is_power_of_two() {
            Ok(n)
        } else {
            Err(Error::InvalidArgument(format!(
                "piece length {n}: must be a power of two from 16 KiB to {} MiB",
                MAX_PIECE_LENGTH >> 20
            )))
        }
    };
    let (info, cache_use) = if meta.is_dir() && options.align {
        let exclude = options
            .exclude
            .iter()
            .map(|g| {
                glob::Pattern::new(g)
                    .map_err(|e| Error::InvalidArgument(format!("exclude {g:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let (entries, empty_dirs) = walk_tree(path, &exclude, &written_here(options))?;
        let content: u64 = entries.iter().map(|e| e.length).sum();
        if content == 0 {
            return Err(Error::NothingToShare(path.to_path_buf()));
        }
        let piece_length = match options.piece_length {
            None => aligned_piece_length(entries.iter().map(|e| e.length)),
            Some(n) => check_length(n)?,
        };
        aligned_info(name, entries, empty_dirs, piece_length, options, progress)?
    } else {
        let (files, disk_paths, single_file) = if meta.is_dir() {
            let (files, disk_paths) = walk(path, &written_here(options))?;
            (files, disk_paths, false)
        } else if meta.is_file() {
            let entry = FileEntry {
                path: vec![name.clone()],
                length: meta.len(),
                ..FileEntry::default()
            };
            (vec![entry], vec![path.to_path_buf()], true)
        } else {
            return Err(Error::InvalidArgument(format!(
                "{}: not a regular file or directory",
                path.display()
            )));
        };
        let total: u64 = files.iter().map(|f| f.length).sum();
        if total == 0 {
            return Err(Error::NothingToShare(path.to_path_buf()));
        }
        let piece_length = match options.piece_length {
            None => auto_piece_length(total),
            Some(n) => check_length(n)?,
        };
        let source = DataSource::new(
            disk_paths,
            Layout::new(files.iter().map(|f| (f.length, f.pad)), piece_length),
        );
        let pieces = hash_pieces(&source, progress)?;
        let info = NewInfo {
            name,
            piece_length,
            pieces,
            files,
            single_file,
            private: options.private,
            empty_dirs: Vec::new(),
        };
        let hashed = CacheUse {
            files_hashed: info.files.len(),
            files_cached: 0,
            bytes_hashed: total,
        };
        (info, hashed)
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .ok();
    let meta = Metainfo::new(
        info,
        Some(announce),
        announce_list,
        options.comment.clone(),
        Some(concat!("murder/", env!("CARGO_PKG_VERSION")).to_string()),
        now,
    )?;
    Ok((meta, cache_use))
}

/// One entry of a tree to be made aligned.
struct TreeEntry {
    components: Vec<String>,
    length: u64,
    /// `None` for a symbolic link.
    disk: Option<PathBuf>,
    executable: bool,
    symlink: Option<Vec<String>>,
}

/// The `info` of an aligned tree: each regular file, then (unless it is
/// the last or fills its last piece) a pad file to the next piece boundary.
/// Files are hashed on every core, one file per task; cached files are not
/// read at all.
fn aligned_info(
    name: String,
    entries: Vec<TreeEntry>,
    empty_dirs: Vec<Vec<String>>,
    piece_length: u64,
    options: &CreateOptions,
    progress: &Progress,
) -> Result<(NewInfo, CacheUse)> {
    let last_data = entries.iter().rposition(|e| e.length > 0);
    let mut files = Vec::new();
    // For each regular file with data: its path on disk, and whether a pad
    // follows (its last piece is zero-filled to the piece length).
    let mut jobs: Vec<(PathBuf, u64, bool)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        files.push(FileEntry {
            path: e.components.clone(),
            length: e.length,
            pad: false,
            executable: e.executable,
            symlink: e.symlink.clone(),
            sha1: None,
        });
        if e.length == 0 {
            continue;
        }
        let tail = e.length % piece_length;
        let padded = tail != 0 && Some(i) != last_data;
        if let Some(disk) = &e.disk {
            jobs.push((disk.clone(), e.length, padded));
        }
        if padded {
            let pad = piece_length - tail;
            files.push(FileEntry {
                path: vec![".pad".into(), pad.to_string()],
                length: pad,
                pad: true,
                ..FileEntry::default()
            });
        }
    }
    let mut cache = options
        .hash_cache
        .as_deref()
        .map(HashCache::load)
        .unwrap_or_default();
    let total: u64 = jobs.iter().map(|(_, len, _)| len).sum();
    progress.start(total);
    let hashed: Vec<(FileHashes, Option<FileKey>, bool)> = jobs
        .par_iter()
        .map(|(disk, len, padded)| -> Result<_> {
            if progress.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let meta = std::fs::metadata(disk).map_err(|e| Error::io(disk, e))?;
            if meta.len() != *len {
                return Err(Error::ChangedWhileHashing { path: disk.clone() });
            }
            let key = options
                .hash_cache
                .is_some()
                .then(|| FileKey::new(disk, &meta, piece_length, *padded));
            if let Some(hit) = key.as_ref().and_then(|k| cache.get(k)) {
                progress.advance(*len);
                return Ok((hit.clone(), key, true));
            }
            let hashes = hash_file(disk, *len, piece_length, *padded, progress)?;
            Ok((hashes, key, false))
        })
        .collect::<Result<_>>()?;
    let mut pieces = Vec::new();
    let mut used = CacheUse::default();
    // The files with data, in order, as `jobs` lists them.
    let mut with_data = files.iter_mut().filter(|f| f.is_regular() && f.length > 0);
    for ((hashes, key, hit), (_, len, _)) in hashed.into_iter().zip(&jobs) {
        if hit {
            used.files_cached += 1;
        } else {
            used.files_hashed += 1;
            used.bytes_hashed += len;
        }
        pieces.extend_from_slice(&hashes.pieces);
        if let Some(file) = with_data.next() {
            file.sha1 = Some(hashes.sha1);
        }
        if let Some(key) = key {
            cache.insert(key, hashes);
        }
    }
    cache.save()?;
    Ok((
        NewInfo {
            name,
            piece_length,
            pieces,
            files,
            single_file: false,
            private: options.private,
            empty_dirs,
        },
        used,
    ))
}

/// The piece hashes of one file that starts on a piece boundary (with
/// `padded`, its last piece is zero-filled to the piece length) and the
/// SHA-1 of its own bytes, in one read.
fn hash_file(
    path: &Path,
    len: u64,
    piece_length: u64,
    padded: bool,
    progress: &Progress,
) -> Result<FileHashes> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; piece_length.min(len) as usize];
    let mut out = Vec::with_capacity(len.div_ceil(piece_length) as usize);
    let mut whole = Sha1::new();
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(piece_length) as usize;
        file.read_exact(&mut buf[..n]).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::ChangedWhileHashing {
                    path: path.to_path_buf(),
                }
            } else {
                Error::io(path, e)
            }
        })?;
        whole.update(&buf[..n]);
        let mut sha = Sha1::new();
        sha.update(&buf[..n]);
        if padded && (n as u64) < piece_length {
            let zeros = vec![0u8; (piece_length - n as u64) as usize];
            sha.update(&zeros);
        }
        out.push(sha.finalize().into());
        done += n as u64;
        progress.advance(n as u64);
    }
    Ok(FileHashes {
        pieces: out,
        sha1: whole.finalize().into(),
    })
}

/// Every regular file, symbolic link and directory under `root`, without
/// following links, in a stable order (sorted by path, component by
/// component). A link must point inside the tree; anything but files,
/// directories and links is refused.
/// The (device, inode) of each file in `leave_out` and the hash cache that
/// exists (one that does not yet cannot be in the tree either).
fn written_here(options: &CreateOptions) -> HashSet<(u64, u64)> {
    options
        .leave_out
        .iter()
        .chain(&options.hash_cache)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// The tree's entries, sorted, and the directories that hold none of them
/// and no directory (making those makes every empty one).
fn walk_tree(
    root: &Path,
    exclude: &[glob::Pattern],
    written_here: &HashSet<(u64, u64)>,
) -> Result<(Vec<TreeEntry>, Vec<Vec<String>>)> {
    let mut entries = Vec::new();
    let mut dirs = Vec::new();
    let included = |e: &walkdir::DirEntry| {
        e.depth() == 0
            || !exclude
                .iter()
                .any(|p| e.file_name().to_str().is_some_and(|n| p.matches(n)))
    };
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
        .into_iter()
        .filter_entry(included)
    {
        let entry = entry.map_err(|e| Error::walk(root, e))?;
        let kind = entry.file_type();
        if kind.is_dir() {
            dirs.push(relative_components(root, entry.path())?);
            continue;
        }
        let components = relative_components(root, entry.path())?;
        let meta = entry
            .metadata()
            .map_err(|e| Error::io(entry.path(), e.into()))?;
        if kind.is_symlink() {
            let target =
                std::fs::read_link(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            let resolved = link_target(&components, &target).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "{}: a link to {} points outside the tree (links must stay inside it)",
                    entry.path().display(),
                    target.display()
                ))
            })?;
            entries.push(TreeEntry {
                components,
                length: 0,
                disk: None,
                executable: false,
                symlink: Some(resolved),
            });
        } else if kind.is_file() {
            if written_here.contains(&(meta.dev(), meta.ino())) {
                continue;
            }
            entries.push(TreeEntry {
                components,
                length: meta.len(),
                disk: Some(entry.into_path()),
                executable: meta.permissions().mode() & 0o111 != 0,
                symlink: None,
            });
        } else {
            return Err(Error::InvalidArgument(format!(
                "{}: not a regular file, directory or link",
                entry.path().display()
            )));
        }
    }
    // A directory holds something when an entry's path starts with it.
    let held: HashSet<&[String]> = entries
        .iter()
        .flat_map(|e| (1..e.components.len()).map(move |n| &e.components[..n]))
        .collect();
    // A directory that holds no entry and no other directory: the leaves
    // of the empty ones, in the walk's order.
    let parents: HashSet<&[String]> = dirs.iter().map(|d| &d[..d.len() - 1]).collect();
    let empty = dirs
        .iter()
        .filter(|d| !held.contains(d.as_slice()) && !parents.contains(d.as_slice()))
        .cloned()
        .collect();
    Ok((entries, empty))
}

fn relative_components(root: &Path, path: &Path) -> Result<Vec<String>> {
    let relative = path
        .strip_prefix(root)
        .map_err(|_| Error::InvalidArgument(format!("{}: outside the tree", path.display())))?;
    relative
        .components()
        .map(|c| {
            c.as_os_str().to_str().map(str::to_string).ok_or_else(|| {
                Error::InvalidArgument(format!("{}: name is not UTF-8", path.display()))
            })
        })
        .collect()
}

/// The target of a link at `link` (components below the root), as
/// components below the root; `None` if it is absolute or leaves the tree.
fn link_target(link: &[String], target: &Path) -> Option<Vec<String>> {
    if target.is_absolute() {
        return None;
    }
    let mut out: Vec<String> = link[..link.len().saturating_sub(1)].to_vec();
    for c in target.components() {
        match c {
            std::path::Component::Normal(part) => out.push(part.to_str()?.to_string()),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop()?;
            }
            _ => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The last component of the path as given (or, for `.`, of the real path).
fn torrent_name(path: &Path) -> Result<String> {
    let real;
    let named = match path.file_name() {
        Some(_) => path,
        None => {
            real = path.canonicalize().map_err(|e| Error::io(path, e))?;
            &real
        }
    };
    named
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidArgument(format!("{}: name is not UTF-8", path.display())))
}

/// Every regular file under `root` (following symlinks, refusing loops), in
/// a stable order: sorted by path, component by component.
fn walk(root: &Path, written_here: &HashSet<(u64, u64)>) -> Result<(Vec<FileEntry>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut disk_paths = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| Error::walk(root, e))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(root).map_err(|_| {
            Error::InvalidArgument(format!("{}: outside the tree", entry.path().display()))
        })?;
        let components = relative
            .components()
            .map(|c| {
                c.as_os_str().to_str().map(str::to_string).ok_or_else(|| {
                    Error::InvalidArgument(format!("{}: name is not UTF-8", entry.path().display()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = entry
            .metadata()
            .map_err(|e| Error::io(entry.path(), e.into()))?;
        if written_here.contains(&(meta.dev(), meta.ino())) {
            continue;
        }
        let length = meta.len();
        files.push(FileEntry {
            path: components,
            length,
            ..FileEntry::default()
        });
        disk_paths.push(entry.into_path());
    }
    Ok((files, disk_paths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::check_pieces;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tracker_host_port_becomes_an_announce_url() {
        assert_eq!(
            announce_url("10.0.0.1:8998").unwrap(),
            "http://10.0.0.1:8998/announce"
        );
        assert_eq!(
            announce_url("http://t/announce").unwrap(),
            "http://t/announce"
        );
        // An IPv6 address gets the brackets a URL needs, once.
        assert_eq!(
            announce_url("2001:db8::5:8998").unwrap(),
            "http://[2001:db8::5]:8998/announce"
        );
        assert_eq!(
            announce_url("[::1]:8998").unwrap(),
            "http://[::1]:8998/announce"
        );
        for bad in [
            "",
            "host",
            "host:",
            ":8998",
            "host:99999",
            "host:0",
            "a b:1",
            "h;rm -rf /:1",
            "[::1:8998",
            "a[b]:1",
            // IPv6 without a port: split at its last colon, no address.
            "2001:db8::5",
            "::1",
            "[2001:db8:]:5",
        ] {
            assert!(announce_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn automatic_piece_length_aims_at_1000_to_2000_pieces() {
        assert_eq!(auto_piece_length(1), 32 << 10);
        assert_eq!(auto_piece_length(64 << 20), 64 << 10);
        assert_eq!(auto_piece_length(200 << 20), 128 << 10);
        for size in [1u64 << 30, 3 << 30, 10 << 30] {
            let n = size.div_ceil(auto_piece_length(size));
            assert!((1000..=2000).contains(&n), "{size}: {n} pieces");
        }
        assert_eq!(auto_piece_length(1 << 45), 16 << 20);
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("release");
        fs::create_dir_all(root.join("app/lib")).unwrap();
        fs::create_dir_all(root.join("empty_dir")).unwrap();
        for i in 0..50u32 {
            let data: Vec<u8> = (0..(i * 997 % 5000)).map(|b| (b ^ i) as u8).collect();
            fs::write(root.join(format!("app/lib/f{i:02}.rb")), data).unwrap();
        }
        fs::write(root.join("README"), b"hello").unwrap();
        fs::write(root.join("app/empty"), b"").unwrap();
        dir
    }

    #[test]
    fn a_tree_hashes_across_file_boundaries_and_verifies() {
        let dir = tree();
        let root = dir.path().join("release");
        let mut opts = CreateOptions::new("127.0.0.1:8998");
        opts.piece_length = Some(16 << 10);
        let m = create_torrent(&root, &opts, &Progress::new()).unwrap();
        assert_eq!(m.name, "release");
        assert!(!m.single_file);
        assert_eq!(m.files.len(), 52);
        assert_eq!(m.files[0].path, vec!["README"]);
        assert_eq!(m.files[1].path, vec!["app", "empty"]);
        let reparsed = Metainfo::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(reparsed.info_hash(), m.info_hash());
        assert_eq!(reparsed.files, m.files);

        let source = DataSource::for_torrent(&m, &root);
        let all = check_pieces(&source, &m.pieces, &Progress::new()).unwrap();
        assert!(all.iter().all(|&ok| ok));

        // Damage one byte of one file: exactly the pieces over it fail.
        fs::write(root.join("app/lib/f10.rb"), vec![0u8; 4970]).unwrap();
        let some = check_pieces(&source, &m.pieces, &Progress::new()).unwrap();
        let bad = some.iter().filter(|&&ok| !ok).count();
        assert!((1..=2).contains(&bad), "{bad} bad pieces");
        // A missing file fails only its pieces, without an error.
        fs::remove_file(root.join("README")).unwrap();
        let first = check_pieces(&source, &m.pieces, &Progress::new()).unwrap();
        assert!(!first[0]);
        // Nor does a directory where the file should be: no data there.
        fs::create_dir(root.join("README")).unwrap();
        let first = check_pieces(&source, &m.pieces, &Progress::new()).unwrap();
        assert!(!first[0]);
    }

    #[test]
    fn a_single_file_and_its_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.tgz");
        fs::write(&path, vec![42u8; 300_000]).unwrap();
        let mut opts = CreateOptions::new("t:1");
        opts.private = true;
        let m = create_torrent(&path, &opts, &Progress::new()).unwrap();
        assert!(m.single_file && m.private);
        assert_eq!(m.name, "app.tgz");
        assert_eq!(m.piece_length, 32 << 10);
        assert_eq!(m.piece_count(), 10);
        assert_eq!(m.announce.as_deref(), Some("http://t:1/announce"));

        opts.piece_length = Some(1000);
        assert!(matches!(
            create_torrent(&path, &opts, &Progress::new()),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn nothing_to_share_and_missing_paths_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let opts = CreateOptions::new("t:1");
        fs::create_dir(dir.path().join("empty")).unwrap();
        fs::write(dir.path().join("empty/zero"), b"").unwrap();
        assert!(matches!(
            create_torrent(&dir.path().join("empty"), &opts, &Progress::new()),
            Err(Error::NothingToShare(_))
        ));
        assert!(matches!(
            create_torrent(&dir.path().join("nope"), &opts, &Progress::new()),
            Err(Error::Io { .. })
        ));
    }

    fn aligned_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("release");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("lib/deep")).unwrap();
        fs::write(root.join("bin/run"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("lib/a.rb"), vec![1u8; 40_000]).unwrap();
        fs::write(root.join("lib/deep/b.rb"), vec![2u8; 16_384]).unwrap();
        fs::write(root.join("lib/empty"), b"").unwrap();
        std::os::unix::fs::symlink("../lib/a.rb", root.join("bin/a")).unwrap();
        std::os::unix::fs::symlink("deep", root.join("lib/current")).unwrap();
        dir
    }

    /// `exclude` leaves out what is named like a glob at any depth (a
    /// vendored checkout's `.git` too) and nothing else; asked of anything
    /// but an aligned tree it is refused, not ignored.
    #[test]
    fn exclude_leaves_out_names_at_any_depth_and_needs_align() {
        let dir = aligned_tree();
        let root = dir.path().join("release");
        for git in [root.join(".git/objects"), root.join("lib/deep/.git")] {
            fs::create_dir_all(&git).unwrap();
            fs::write(git.join("HEAD"), b"ref: refs/heads/main\n").unwrap();
        }
        fs::write(root.join(".gitignore"), b"tmp/\n").unwrap();
        let mut opts = CreateOptions::new("127.0.0.1:8998");
        opts.align = true;
        opts.exclude = vec![".git".into()];
        let m = create_torrent(&root, &opts, &Progress::new()).unwrap();
        let paths: Vec<String> = m
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| f.path.join("/"))
            .collect();
        assert!(
            paths.iter().all(|p| !p.split('/').any(|c| c == ".git")),
            "{paths:?}"
        );
        assert!(paths.contains(&".gitignore".to_string()), "{paths:?}");
        assert!(paths.contains(&"lib/deep/b.rb".to_string()), "{paths:?}");

        opts.align = false;
        let err = create_torrent(&root, &opts, &Progress::new()).unwrap_err();
        assert!(
            err.to_string().contains("exclude needs an aligned tree"),
            "{err}"
        );
    }

    /// An empty directory of the tree is in the torrent, under the info-hash
    /// (the deepest of each empty branch: making it makes the rest), and
    /// survives a round trip through the file; one that holds a file, or
    /// only a directory, is not listed.
    #[test]
    fn an_aligned_tree_keeps_its_empty_directories() {
        let dir = aligned_tree();
        let root = dir.path().join("release");
        fs::create_dir_all(root.join("tmp/cache/assets")).unwrap();
        fs::create_dir_all(root.join("log")).unwrap();
        fs::create_dir_all(root.join("lib/none")).unwrap();
        fs::write(root.join("log/.keep"), b"").unwrap();
        let mut opts = CreateOptions::new("127.0.0.1:8998");
        opts.align = true;
        let m = create_torrent(&root, &opts, &Progress::new()).unwrap();
        let dirs: Vec<String> = m.empty_dirs.iter().map(|d| d.join("/")).collect();
        assert_eq!(dirs, ["lib/none", "tmp/cache/assets"]);
        assert!(m.files.iter().any(|f| f.path == ["log", ".keep"]));
        let again = Metainfo::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(again.empty_dirs, m.empty_dirs);
        assert_eq!(again.info_hash(), m.info_hash());
    }

    #[test]
    fn an_aligned_tree_puts_every_file_on_a_piece_boundary() {
        let dir = aligned_tree();
        let root = dir.path().join("release");
        let mut opts = CreateOptions::new("127.0.0.1:8998");
        opts.align = true;
        opts.piece_length = Some(16 << 10);
        opts.exclude = vec![".git*".into()];
        let m = create_torrent(&root, &opts, &Progress::new()).unwrap();
        assert!(m.files.iter().all(|f| f.path[0] != ".git"), "excluded");
        let layout = m.layout();
        let mut offset = 0;
        for f in &m.files {
            if f.is_regular() && f.length > 0 {
                assert_eq!(offset % m.piece_length, 0, "{:?} starts mid-piece", f.path);
            }
            offset += f.length;
        }
        // BEP 47 `sha1`: every file with data carries its own bytes' SHA-1.
        for f in m.files.iter().filter(|f| f.is_regular()) {
            let bytes = std::fs::read(f.path_under(&root)).unwrap();
            let expected: Option<[u8; 20]> = (f.length > 0).then(|| Sha1::digest(&bytes).into());
            assert_eq!(f.sha1, expected, "{:?}", f.path);
        }
        let run = m.files.iter().find(|f| f.path == ["bin", "run"]).unwrap();
        assert!(run.executable);
        let link = m.files.iter().find(|f| f.path == ["bin", "a"]).unwrap();
        assert_eq!(
            link.symlink.as_deref(),
            Some(&["lib".to_string(), "a.rb".to_string()][..])
        );
        let current = m
            .files
            .iter()
            .find(|f| f.path == ["lib", "current"])
            .unwrap();
        assert_eq!(
            current.symlink.as_deref(),
            Some(&["lib".to_string(), "deep".to_string()][..])
        );
        assert!(m.files.iter().any(|f| f.pad && f.path[0] == ".pad"));
        assert!(m
            .files
            .iter()
            .any(|f| f.path == ["lib", "empty"] && f.length == 0));
        // Read back: the same info-hash, the same entries; the data verifies.
        let reparsed = Metainfo::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(reparsed.info_hash(), m.info_hash());
        assert_eq!(reparsed.files, m.files);
        let source = DataSource::for_torrent(&m, &root);
        assert!(check_pieces(&source, &m.pieces, &Progress::new())
            .unwrap()
            .iter()
            .all(|&ok| ok));
        assert_eq!(layout.data_end(0), 18, "bin/run, then padding");
    }

    #[test]
    fn links_out_of_the_tree_are_refused_when_the_torrent_is_made() {
        for target in ["/etc/passwd", "../../outside", ".."] {
            let dir = aligned_tree();
            let root = dir.path().join("release");
            std::os::unix::fs::symlink(target, root.join("lib/escape")).unwrap();
            let mut opts = CreateOptions::new("127.0.0.1:8998");
            opts.align = true;
            let err = create_torrent(&root, &opts, &Progress::new()).unwrap_err();
            assert!(
                err.to_string().contains("points outside the tree"),
                "{target}: {err}"
            );
        }
    }

    #[test]
    fn the_hash_cache_hashes_only_what_changed() {
        let dir = aligned_tree();
        let root = dir.path().join("release");
        // Files changed within the last second are not remembered.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let mut opts = CreateOptions::new("127.0.0.1:8998");
        opts.align = true;
        opts.hash_cache = Some(dir.path().join("cache/hashes.json"));
        let (cold, used) = create_torrent_with_cache(&root, &opts, &Progress::new()).unwrap();
        assert_eq!((used.files_hashed, used.files_cached), (3, 0));
        let (warm, used) = create_torrent_with_cache(&root, &opts, &Progress::new()).unwrap();
        assert_eq!((used.files_hashed, used.files_cached), (0, 3));
        assert_eq!(warm.info_hash(), cold.info_hash());
        // A changed file (same size) is hashed again, and only it.
        fs::write(root.join("lib/a.rb"), vec![9u8; 40_000]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (changed, used) = create_torrent_with_cache(&root, &opts, &Progress::new()).unwrap();
        assert_eq!((used.files_hashed, used.files_cached), (1, 2));
        let (_, used) = create_torrent_with_cache(&root, &opts, &Progress::new()).unwrap();
        assert_eq!(
            (used.files_hashed, used.files_cached),
            (0, 3),
            "the changed file is remembered"
        );
        opts.hash_cache = None;
        let fresh = create_torrent(&root, &opts, &Progress::new()).unwrap();
        assert_eq!(changed.info_hash(), fresh.info_hash());
        assert_ne!(changed.info_hash(), cold.info_hash());
    }

    #[test]
    fn aligned_trees_of_small_files_get_small_pieces() {
        let small = vec![12_000u64; 3_000];
        assert_eq!(aligned_piece_length(small.iter().copied()), 16 << 10);
        // A release's mix (bench/release's shape): sources and a few large
        // assets. Each piece costs as much as hashing 128 KiB (PIECE_COST),
        // so the assets' pieces outweigh the sources' padding.
        let mix: Vec<u64> = small.iter().copied().chain([4u64 << 20; 16]).collect();
        assert_eq!(aligned_piece_length(mix.iter().copied()), 64 << 10);
        let large = [64u64 << 20];
        assert_eq!(
            aligned_piece_length(large.iter().copied()),
            auto_piece_length(64 << 20)
        );
        let huge = [8u64 << 30];
        assert_eq!(
            aligned_piece_length(huge.iter().copied()),
            MAX_ALIGNED_PIECE_LENGTH
        );
    }

    #[test]
    fn cancelling_stops_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        fs::write(&path, vec![1u8; 1 << 20]).unwrap();
        let progress = Progress::new();
        progress.cancel();
        let mut opts = CreateOptions::new("t:1");
        opts.piece_length = Some(16 << 10);
        assert!(matches!(
            create_torrent(&path, &opts, &progress),
            Err(Error::Cancelled)
        ));
    }
}
