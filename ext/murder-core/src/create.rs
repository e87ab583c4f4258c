//! Making a torrent of a file or a directory tree (Twitter's
//! `murder_make_torrent.py FILE host:port OUT`, on every core).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::hashing::{hash_pieces, DataSource};
use crate::layout::Layout;
use crate::metainfo::{FileEntry, Metainfo, NewInfo, MAX_PIECE_LENGTH};
use crate::progress::Progress;

pub const MIN_AUTO_PIECE_LENGTH: u64 = 32 << 10;
pub const MAX_AUTO_PIECE_LENGTH: u64 = 16 << 20;
/// The automatic piece length aims at no more pieces than this.
const TARGET_MAX_PIECES: u64 = 2000;

#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// `host:port` of the tracker, or a full announce URL.
    pub tracker: String,
    /// Bytes per piece; `None` picks one from the size.
    pub piece_length: Option<u64>,
    /// BEP 27: peers only from the tracker.
    pub private: bool,
    pub comment: Option<String>,
}

impl CreateOptions {
    pub fn new(tracker: impl Into<String>) -> Self {
        CreateOptions {
            tracker: tracker.into(),
            piece_length: None,
            private: false,
            comment: None,
        }
    }
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
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(format!("http://{host}:{port}/announce")),
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

/// Hashes `path` (a file or a directory) and returns its torrent.
pub fn create_torrent(
    path: &Path,
    options: &CreateOptions,
    progress: &Progress,
) -> Result<Metainfo> {
    let announce = announce_url(&options.tracker)?;
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let name = torrent_name(path)?;
    let (files, disk_paths, single_file) = if meta.is_dir() {
        let (files, disk_paths) = walk(path)?;
        (files, disk_paths, false)
    } else if meta.is_file() {
        let entry = FileEntry {
            path: vec![name.clone()],
            length: meta.len(),
            pad: false,
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
        Some(n) if (16 << 10..=MAX_PIECE_LENGTH).contains(&n) && n.is_power_of_two() => n,
        Some(n) => {
            return Err(Error::InvalidArgument(format!(
                "piece length {n}: must be a power of two from 16 KiB to {} MiB",
                MAX_PIECE_LENGTH >> 20
            )))
        }
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
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .ok();
    Ok(Metainfo::new(
        info,
        Some(announce),
        options.comment.clone(),
        Some(concat!("murder/", env!("CARGO_PKG_VERSION")).to_string()),
        now,
    )?)
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
fn walk(root: &Path) -> Result<(Vec<FileEntry>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut disk_paths = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_path_buf();
            Error::io(path, e.into())
        })?;
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
        let length = entry
            .metadata()
            .map_err(|e| Error::io(entry.path(), e.into()))?
            .len();
        files.push(FileEntry {
            path: components,
            length,
            pad: false,
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
        for bad in [
            "",
            "host",
            "host:",
            ":8998",
            "host:99999",
            "host:0",
            "a b:1",
            "h;rm -rf /:1",
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
