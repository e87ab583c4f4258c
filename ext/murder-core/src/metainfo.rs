//! BitTorrent v1 metainfo (BEP 3): reading, validating and writing .torrent
//! files. The info-hash is always the SHA-1 of the exact bytes of `info` as
//! they were read, so torrents made by other tools (v1+v2 hybrids with BEP 47
//! pad files among them) keep the info-hash those tools computed.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use bendy::decoding::{Decoder, Object};
use bendy::encoding::Encoder;
use sha1::{Digest, Sha1};

use crate::error::{Error, MetainfoError, Result};
use crate::layout::Layout;

/// A .torrent larger than this is refused before parsing (a 1 TiB release
/// in 256 KiB pieces needs 80 MiB of hashes; nothing we deploy comes close).
pub const MAX_TORRENT_BYTES: usize = 64 << 20;
/// Largest piece length accepted: bounds the memory one piece needs.
pub const MAX_PIECE_LENGTH: u64 = 128 << 20;
/// Deepest bencode nesting accepted. A v2 `file tree` nests two levels per
/// directory, so this allows paths ~30 directories deep and no stack abuse.
const MAX_DEPTH: usize = 64;
/// Longest path (or link target) in a tree, in bytes: Linux's PATH_MAX.
/// Checked before anything walks a path's components.
const MAX_PATH_BYTES: usize = 4096;

type MResult<T> = std::result::Result<T, MetainfoError>;

/// One file of a torrent, in the order its bytes appear in the pieces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileEntry {
    /// Components below the torrent's name (for a single-file torrent: the name).
    pub path: Vec<String>,
    pub length: u64,
    /// A BEP 47 pad file: zeros that align the next file, never written to disk.
    pub pad: bool,
    /// BEP 47 `x`: the file is executable.
    pub executable: bool,
    /// BEP 47 `l`: a symbolic link to this path, relative to the torrent's
    /// root (never `..`, never outside); its `length` is 0.
    pub symlink: Option<Vec<String>>,
    /// BEP 47 `sha1`: the SHA-1 of the file's own bytes (no padding). Part
    /// of the info dictionary, so the info-hash covers it: reuse checks a
    /// whole file of an earlier release against it (reading only the
    /// file's bytes, not the zeros that pad its last piece).
    pub sha1: Option<[u8; 20]>,
}

impl FileEntry {
    /// A regular file (not a pad file, not a link).
    pub fn is_regular(&self) -> bool {
        !self.pad && self.symlink.is_none()
    }

    /// Where this file of a multi-file torrent is below `root`: one buffer
    /// for all its components (a tree's thousands of files are looked up
    /// again and again).
    pub fn path_under(&self, root: &std::path::Path) -> std::path::PathBuf {
        let len = self.path.iter().map(|c| c.len() + 1).sum::<usize>();
        let mut path = std::path::PathBuf::with_capacity(root.as_os_str().len() + len);
        path.push(root);
        for component in &self.path {
            path.push(component);
        }
        path
    }
}

/// A parsed and validated torrent.
#[derive(Debug, Clone)]
pub struct Metainfo {
    pub announce: Option<String>,
    /// BEP 12 tiers of announce URLs (empty when the torrent has none).
    pub announce_list: Vec<Vec<String>>,
    pub comment: Option<String>,
    pub created_by: Option<String>,
    pub creation_date: Option<i64>,
    pub name: String,
    pub piece_length: u64,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    /// True when `info` has `length` (one file) rather than `files`.
    pub single_file: bool,
    pub private: bool,
    /// Directories a download makes though no file lies in them (`murder
    /// empty dirs` in `info`, so the info-hash covers it; other clients
    /// ignore the key): a torrent's files alone cannot say a release has an
    /// empty `log/` or `tmp/cache/`. Components below the root, like paths.
    pub empty_dirs: Vec<Vec<String>>,
    info_hash: [u8; 20],
    raw_info: Vec<u8>,
}

/// The fields of `info` that a new torrent is made of.
pub(crate) struct NewInfo {
    pub name: String,
    pub piece_length: u64,
    pub pieces: Vec<[u8; 20]>,
    pub files: Vec<FileEntry>,
    pub single_file: bool,
    pub private: bool,
    pub empty_dirs: Vec<Vec<String>>,
}

impl Metainfo {
    /// Where each of `empty_dirs` is below `root`.
    pub fn empty_dirs_under<'a>(
        &'a self,
        root: &'a std::path::Path,
    ) -> impl Iterator<Item = std::path::PathBuf> + 'a {
        self.empty_dirs
            .iter()
            .map(move |dir| dir.iter().fold(root.to_path_buf(), |path, c| path.join(c)))
    }

    /// Reads and validates a .torrent file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let refused = |source| Error::InvalidTorrentFile {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.len() > MAX_TORRENT_BYTES as u64 {
            return Err(refused(MetainfoError::TooLarge {
                size: meta.len() as usize,
                limit: MAX_TORRENT_BYTES,
            }));
        }
        // At most one byte past the limit, whatever the length said: a
        // stream (a FIFO, a link to /dev/zero) has none, or no end.
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_TORRENT_BYTES as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes).map_err(refused)
    }

    /// Parses and validates the bytes of a .torrent file.
    pub fn from_bytes(bytes: &[u8]) -> MResult<Self> {
        if bytes.len() > MAX_TORRENT_BYTES {
            return Err(MetainfoError::TooLarge {
                size: bytes.len(),
                limit: MAX_TORRENT_BYTES,
            });
        }
        let mut announce = None;
        let mut announce_list = Vec::new();
        let mut comment = None;
        let mut created_by = None;
        let mut creation_date = None;
        let mut raw_info: Option<&[u8]> = None;

        let mut decoder = Decoder::new(bytes).with_max_depth(MAX_DEPTH);
        {
            let top = decoder
                .next_object()
                .map_err(bencode)?
                .ok_or(MetainfoError::Bencode("empty input".into()))?;
            let Object::Dict(mut dict) = top else {
                return Err(MetainfoError::Bencode(
                    "top level is not a dictionary".into(),
                ));
            };
            while let Some((key, value)) = dict.next_pair().map_err(bencode)? {
                match key {
                    b"announce" => announce = Some(text(value, "announce")?),
                    b"announce-list" => announce_list = tiers(value)?,
                    b"comment" => comment = Some(text(value, "comment")?),
                    b"created by" => created_by = Some(text(value, "created by")?),
                    b"creation date" => creation_date = Some(int(value, "creation date")?),
                    b"info" => match value {
                        Object::Dict(info) => raw_info = Some(info.into_raw().map_err(bencode)?),
                        _ => return Err(invalid("info", "must be a dictionary")),
                    },
                    _ => {} // dropping the value skips (and still checks) it
                }
            }
        }
        if !matches!(decoder.next_object(), Ok(None)) {
            return Err(MetainfoError::TrailingData);
        }
        let raw_info = raw_info.ok_or(MetainfoError::Missing("info"))?;
        let info = parse_info(raw_info)?;
        let mut metainfo = Metainfo {
            announce,
            announce_list,
            comment,
            created_by,
            creation_date,
            name: info.name,
            piece_length: info.piece_length,
            pieces: info.pieces,
            files: info.files,
            single_file: info.single_file,
            private: info.private,
            empty_dirs: info.empty_dirs,
            info_hash: Sha1::digest(raw_info).into(),
            raw_info: raw_info.to_vec(),
        };
        metainfo.validate()?;
        metainfo.announce = metainfo.announce.filter(|a| !a.is_empty());
        Ok(metainfo)
    }

    /// Builds a new torrent; its `info` is encoded canonically here.
    pub(crate) fn new(
        info: NewInfo,
        announce: Option<String>,
        announce_list: Vec<Vec<String>>,
        comment: Option<String>,
        created_by: Option<String>,
        creation_date: Option<i64>,
    ) -> MResult<Self> {
        let raw_info = encode_info(&info)?;
        let metainfo = Metainfo {
            announce,
            announce_list,
            comment,
            created_by,
            creation_date,
            info_hash: Sha1::digest(&raw_info).into(),
            raw_info,
            name: info.name,
            piece_length: info.piece_length,
            pieces: info.pieces,
            files: info.files,
            single_file: info.single_file,
            private: info.private,
            empty_dirs: info.empty_dirs,
        };
        metainfo.validate()?;
        Ok(metainfo)
    }

    pub fn info_hash(&self) -> [u8; 20] {
        self.info_hash
    }

    /// Every tracker to announce to, once each: the BEP 12 tiers in order,
    /// else `announce`. murder announces to all and merges their peers, so
    /// that any one of them is enough.
    pub fn trackers(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let all = self
            .announce_list
            .iter()
            .flatten()
            .chain(self.announce.iter());
        for url in all {
            if !url.is_empty() && !out.contains(url) {
                out.push(url.clone());
            }
        }
        out
    }

    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }

    /// The exact bencoded bytes of `info`.
    pub fn raw_info(&self) -> &[u8] {
        &self.raw_info
    }

    /// Bytes in all the pieces (pad files included).
    pub fn total_length(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }

    /// Bytes a holder of the torrent holds: the files' own, pad files left
    /// out (they are never written).
    pub fn data_length(&self) -> u64 {
        self.files.iter().filter(|f| !f.pad).map(|f| f.length).sum()
    }

    pub fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// How the pieces map onto the files.
    pub fn layout(&self) -> Layout {
        Layout::new(
            self.files.iter().map(|f| (f.length, f.pad)),
            self.piece_length,
        )
    }

    /// The whole .torrent file. `info` is written back byte for byte, so the
    /// info-hash never changes in a round trip.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut encoder = Encoder::new();
        // Every key we emit sorts before "info", which is appended last below.
        let outer = encoder.emit_dict(|mut d| {
            if let Some(a) = &self.announce {
                d.emit_pair(b"announce", a)?;
            }
            if !self.announce_list.is_empty() {
                d.emit_pair(b"announce-list", &self.announce_list)?;
            }
            if let Some(c) = &self.comment {
                d.emit_pair(b"comment", c)?;
            }
            if let Some(c) = &self.created_by {
                d.emit_pair(b"created by", c)?;
            }
            if let Some(t) = self.creation_date {
                d.emit_pair(b"creation date", t)?;
            }
            Ok(())
        });
        let mut out = match outer.and_then(|_| encoder.get_output()) {
            Ok(out) => out,
            // Only strings and integers were emitted: encoding cannot fail.
            Err(e) => unreachable!("encoding plain fields failed: {e}"),
        };
        out.pop(); // the closing 'e'
        out.extend_from_slice(b"4:info");
        out.extend_from_slice(&self.raw_info);
        out.push(b'e');
        out
    }

    /// Writes the .torrent atomically: a reader never sees half a file.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::fsutil::write_atomically(path.as_ref(), &self.to_bytes())
    }

    /// The checks every torrent passes, whoever made it.
    fn validate(&self) -> MResult<()> {
        check_component(&self.name, &self.name, "name")?;
        if self.piece_length == 0 || self.piece_length > MAX_PIECE_LENGTH {
            return Err(invalid(
                "piece length",
                format!(
                    "is {}, must be between 1 and {MAX_PIECE_LENGTH}",
                    self.piece_length
                ),
            ));
        }
        let mut total: u64 = 0;
        let mut seen_files = HashSet::new();
        let mut seen_dirs = HashSet::new();
        let links: HashSet<String> = self
            .files
            .iter()
            .filter(|f| f.symlink.is_some() && !f.pad)
            .map(|f| f.path.join("/"))
            .collect();
        for file in &self.files {
            total = total
                .checked_add(file.length)
                .filter(|t| *t <= i64::MAX as u64)
                .ok_or(MetainfoError::LengthOverflow)?;
            let shown = file.path.join("/");
            if shown.len() >= MAX_PATH_BYTES {
                return Err(too_long(&shown));
            }
            if file.path.is_empty() {
                return Err(MetainfoError::UnsafePath {
                    path: shown,
                    reason: "empty path",
                });
            }
            for component in &file.path {
                check_component(component, &shown, "path")?;
            }
            if file.pad {
                if file.symlink.is_some() {
                    return Err(MetainfoError::UnsafePath {
                        path: shown,
                        reason: "is both a pad file and a link",
                    });
                }
                continue;
            }
            if let Some(target) = &file.symlink {
                if file.length != 0 {
                    return Err(MetainfoError::UnsafePath {
                        path: shown,
                        reason: "is a link with data (a link's length is 0)",
                    });
                }
                let shown_target = target.join("/");
                if shown_target.len() >= MAX_PATH_BYTES {
                    return Err(too_long(&shown_target));
                }
                if target.is_empty() {
                    return Err(MetainfoError::UnsafePath {
                        path: shown,
                        reason: "is a link to nothing",
                    });
                }
                for component in target {
                    // BEP 47: relative to the torrent's root, no `..`: a
                    // link can only point inside the tree.
                    check_component(component, &shown_target, "symlink path").map_err(|_| {
                        MetainfoError::UnsafePath {
                            path: format!("{shown} -> {shown_target}"),
                            reason: "is a link that is absolute or leaves the tree",
                        }
                    })?;
                }
            }
            // Two entries for one path, or a file where another needs a
            // directory, would make one write clobber another.
            if seen_dirs.contains(&shown) || !seen_files.insert(shown.clone()) {
                return Err(MetainfoError::UnsafePath {
                    path: shown,
                    reason: "appears twice in the torrent",
                });
            }
            for depth in 1..file.path.len() {
                let dir = file.path[..depth].join("/");
                // Nothing may be written through a link. (A link's target
                // may pass through another link: every target is inside the
                // tree and each link is made relative to its own directory,
                // a real one, so any chain stays inside.)
                if links.contains(&dir) {
                    return Err(MetainfoError::UnsafePath {
                        path: shown,
                        reason: "lies under a path that is a link",
                    });
                }
                if seen_files.contains(&dir) {
                    return Err(MetainfoError::UnsafePath {
                        path: shown,
                        reason: "lies under a path that is also a file",
                    });
                }
                seen_dirs.insert(dir);
            }
        }
        self.check_empty_dirs(&seen_files, &links)?;
        if total == 0 {
            return Err(invalid("length", "adds up to zero bytes: nothing to share"));
        }
        let expected_pieces = total.div_ceil(self.piece_length);
        if self.pieces.len() as u64 != expected_pieces {
            return Err(MetainfoError::PiecesLength {
                actual: self.pieces.len() * 20,
                expected: expected_pieces * 20,
                total_length: total,
                piece_length: self.piece_length,
            });
        }
        self.check_pads()
    }

    /// An empty directory is a path like a file's, below no file and no
    /// link (nothing may be made through one), and no file's own path.
    fn check_empty_dirs(&self, files: &HashSet<String>, links: &HashSet<String>) -> MResult<()> {
        if self.single_file && !self.empty_dirs.is_empty() {
            return Err(invalid(
                "murder empty dirs",
                "a single-file torrent has no directories",
            ));
        }
        let mut seen = HashSet::new();
        for dir in &self.empty_dirs {
            let shown = dir.join("/");
            let unsafe_path = |reason| MetainfoError::UnsafePath {
                path: shown.clone(),
                reason,
            };
            if shown.len() >= MAX_PATH_BYTES {
                return Err(too_long(&shown));
            }
            if dir.is_empty() {
                return Err(unsafe_path("empty path"));
            }
            for component in dir {
                check_component(component, &shown, "murder empty dirs")?;
            }
            if !seen.insert(shown.clone()) {
                return Err(unsafe_path("appears twice in the torrent"));
            }
            for depth in 1..=dir.len() {
                let up = dir[..depth].join("/");
                if links.contains(&up) {
                    return Err(unsafe_path(
                        "is a directory at or under a path that is a link",
                    ));
                }
                if files.contains(&up) {
                    return Err(unsafe_path(
                        "is a directory at or under a path that is a file",
                    ));
                }
            }
        }
        Ok(())
    }

    /// BEP 47: pad files are zeros. A piece that lies wholly in padding
    /// must hash as zeros; a torrent whose hashes say otherwise wants data
    /// in a pad file, which nobody could ever download.
    fn check_pads(&self) -> MResult<()> {
        let layout = self.layout();
        let mut zeros: HashMap<u64, [u8; 20]> = HashMap::new();
        for piece in 0..self.pieces.len() {
            if layout.data_end(piece) != 0 {
                continue;
            }
            let (start, len) = layout.piece_range(piece);
            let expected = zeros
                .entry(len)
                .or_insert_with(|| Sha1::digest(vec![0u8; len as usize]).into());
            if self.pieces[piece] != *expected {
                let pad = layout
                    .spans(start, len)
                    .next()
                    .map(|s| self.files[s.file].path.join("/"))
                    .unwrap_or_default();
                return Err(MetainfoError::UnsafePath {
                    path: pad,
                    reason: "is a pad file that holds data (BEP 47 pads are zeros)",
                });
            }
        }
        Ok(())
    }
}

/// A path past `MAX_PATH_BYTES`, named by its start.
fn too_long(path: &str) -> MetainfoError {
    let start: String = path.chars().take(60).collect();
    MetainfoError::UnsafePath {
        path: format!("{start}…"),
        reason: "is longer than a path may be (4,096 bytes)",
    }
}

/// A component must name exactly one entry inside the destination.
fn check_component(component: &str, shown: &str, _field: &'static str) -> MResult<()> {
    let reason = if component.is_empty() {
        "empty component"
    } else if component == "." || component == ".." {
        "`.` or `..` component"
    } else if component.contains('/') {
        "component holds a slash (absolute or nested path)"
    } else if component.contains('\0') {
        "component holds a NUL byte"
    } else {
        return Ok(());
    };
    Err(MetainfoError::UnsafePath {
        path: shown.to_string(),
        reason,
    })
}

fn parse_info(raw: &[u8]) -> MResult<NewInfo> {
    let mut name = None;
    let mut piece_length = None;
    let mut pieces = None;
    let mut length = None;
    let mut files = None;
    let mut private = false;
    let mut has_file_tree = false;
    let mut empty_dirs = Vec::new();

    let mut decoder = Decoder::new(raw).with_max_depth(MAX_DEPTH);
    let Some(Object::Dict(mut dict)) = decoder.next_object().map_err(bencode)? else {
        return Err(invalid("info", "must be a dictionary"));
    };
    while let Some((key, value)) = dict.next_pair().map_err(bencode)? {
        match key {
            b"name" => name = Some(text(value, "name")?),
            b"piece length" => piece_length = Some(non_negative(value, "piece length")?),
            b"pieces" => {
                let bytes = bytes(value, "pieces")?;
                if bytes.len() % 20 != 0 {
                    return Err(invalid(
                        "pieces",
                        format!("is {} bytes, not a multiple of 20", bytes.len()),
                    ));
                }
                pieces = Some(
                    bytes
                        .chunks_exact(20)
                        .map(|c| {
                            let mut h = [0u8; 20];
                            h.copy_from_slice(c);
                            h
                        })
                        .collect::<Vec<_>>(),
                );
            }
            b"length" => length = Some(non_negative(value, "length")?),
            b"files" => files = Some(parse_files(value)?),
            b"private" => private = int(value, "private")? == 1,
            b"murder empty dirs" => empty_dirs = paths(value, "murder empty dirs")?,
            b"file tree" => has_file_tree = true,
            _ => {}
        }
    }
    let name = name.ok_or(MetainfoError::Missing("name"))?;
    let piece_length = piece_length.ok_or(MetainfoError::Missing("piece length"))?;
    let pieces = match pieces {
        Some(p) => p,
        None if has_file_tree => return Err(MetainfoError::V2Only),
        None => return Err(MetainfoError::Missing("pieces")),
    };
    let (files, single_file) = match (length, files) {
        (Some(length), None) => (
            vec![FileEntry {
                path: vec![name.clone()],
                length,
                ..FileEntry::default()
            }],
            true,
        ),
        (None, Some(files)) => (files, false),
        (Some(_), Some(_)) => {
            return Err(invalid("info", "has both `length` and `files`"));
        }
        (None, None) => return Err(MetainfoError::Missing("length` or `files")),
    };
    Ok(NewInfo {
        name,
        piece_length,
        pieces,
        files,
        single_file,
        private,
        empty_dirs,
    })
}

fn parse_files(value: Object<'_, '_>) -> MResult<Vec<FileEntry>> {
    let Object::List(mut list) = value else {
        return Err(invalid("files", "must be a list"));
    };
    let mut files = Vec::new();
    while let Some(item) = list.next_object().map_err(bencode)? {
        let Object::Dict(mut dict) = item else {
            return Err(invalid("files", "entries must be dictionaries"));
        };
        let mut length = None;
        let mut path = None;
        let mut attr: &[u8] = b"";
        let mut symlink = None;
        let mut sha1 = None;
        while let Some((key, value)) = dict.next_pair().map_err(bencode)? {
            match key {
                b"length" => length = Some(non_negative(value, "length")?),
                b"path" => path = Some(components(value, "path")?),
                b"attr" => attr = bytes(value, "attr")?,
                b"symlink path" => symlink = Some(components(value, "symlink path")?),
                b"sha1" => {
                    let digest: [u8; 20] = bytes(value, "sha1")?
                        .try_into()
                        .map_err(|_| invalid("sha1", "must be 20 bytes"))?;
                    sha1 = Some(digest);
                }
                _ => {}
            }
        }
        let is_link = attr.contains(&b'l');
        if is_link && symlink.is_none() {
            return Err(MetainfoError::Missing("symlink path"));
        }
        files.push(FileEntry {
            path: path.ok_or(MetainfoError::Missing("path"))?,
            // BEP 47: a link's length may be left out.
            length: match length {
                Some(n) => n,
                None if is_link => 0,
                None => return Err(MetainfoError::Missing("length")),
            },
            pad: attr.contains(&b'p'),
            executable: attr.contains(&b'x'),
            symlink: if is_link { symlink } else { None },
            sha1,
        });
    }
    if files.is_empty() {
        return Err(invalid("files", "is empty"));
    }
    Ok(files)
}

fn encode_info(info: &NewInfo) -> MResult<Vec<u8>> {
    let mut encoder = Encoder::new();
    let flat: Vec<u8> = info.pieces.concat();
    encoder
        .emit_dict(|mut d| {
            if info.single_file {
                let length: u64 = info.files.iter().map(|f| f.length).sum();
                d.emit_pair(b"length", length)?;
            } else {
                d.emit_pair_with(b"files", |e| {
                    e.emit_list(|list| {
                        for file in &info.files {
                            list.emit_dict(|mut f| {
                                let attr = match (file.pad, file.executable, &file.symlink) {
                                    (true, _, _) => "p",
                                    (_, _, Some(_)) => "l",
                                    (_, true, _) => "x",
                                    _ => "",
                                };
                                if !attr.is_empty() {
                                    f.emit_pair(b"attr", attr)?;
                                }
                                f.emit_pair(b"length", file.length)?;
                                f.emit_pair(b"path", &file.path)?;
                                if let Some(digest) = &file.sha1 {
                                    f.emit_pair_with(b"sha1", |e| e.emit_bytes(digest))?;
                                }
                                if let Some(target) = &file.symlink {
                                    f.emit_pair(b"symlink path", target)?;
                                }
                                Ok(())
                            })?;
                        }
                        Ok(())
                    })
                })?;
            }
            if !info.empty_dirs.is_empty() {
                d.emit_pair(b"murder empty dirs", &info.empty_dirs)?;
            }
            d.emit_pair(b"name", &info.name)?;
            d.emit_pair(b"piece length", info.piece_length)?;
            d.emit_pair_with(b"pieces", |e| e.emit_bytes(&flat))?;
            if info.private {
                d.emit_pair(b"private", 1)?;
            }
            Ok(())
        })
        .and_then(|_| encoder.get_output())
        .map_err(|e| MetainfoError::Bencode(e.to_string()))
}

fn bencode(e: bendy::decoding::Error) -> MetainfoError {
    MetainfoError::Bencode(e.to_string())
}

fn invalid(field: &'static str, problem: impl Into<String>) -> MetainfoError {
    MetainfoError::Invalid {
        field,
        problem: problem.into(),
    }
}

/// A list of path components.
fn components(value: Object<'_, '_>, field: &'static str) -> MResult<Vec<String>> {
    let Object::List(mut parts) = value else {
        return Err(invalid(field, "must be a list of strings"));
    };
    let mut out = Vec::new();
    while let Some(part) = parts.next_object().map_err(bencode)? {
        out.push(text(part, field)?);
    }
    Ok(out)
}

/// A list of paths, each a list of components.
fn paths(value: Object<'_, '_>, field: &'static str) -> MResult<Vec<Vec<String>>> {
    let Object::List(mut list) = value else {
        return Err(invalid(field, "must be a list of paths"));
    };
    let mut out = Vec::new();
    while let Some(path) = list.next_object().map_err(bencode)? {
        out.push(components(path, field)?);
    }
    Ok(out)
}

fn bytes<'a>(value: Object<'_, 'a>, field: &'static str) -> MResult<&'a [u8]> {
    match value {
        Object::Bytes(b) => Ok(b),
        _ => Err(invalid(field, "must be a string")),
    }
}

/// BEP 12 `announce-list`: a list of tiers, each a list of URLs. Empty
/// tiers are dropped; anything else than lists of strings is refused.
fn tiers(value: Object<'_, '_>) -> MResult<Vec<Vec<String>>> {
    let Object::List(mut list) = value else {
        return Err(invalid("announce-list", "must be a list of lists"));
    };
    let mut out = Vec::new();
    while let Some(tier) = list.next_object().map_err(bencode)? {
        let Object::List(mut urls) = tier else {
            return Err(invalid("announce-list", "each tier must be a list"));
        };
        let mut this = Vec::new();
        while let Some(url) = urls.next_object().map_err(bencode)? {
            this.push(text(url, "announce-list")?);
        }
        if !this.is_empty() {
            out.push(this);
        }
    }
    Ok(out)
}

fn text(value: Object<'_, '_>, field: &'static str) -> MResult<String> {
    let b = bytes(value, field)?;
    String::from_utf8(b.to_vec()).map_err(|_| invalid(field, "is not UTF-8"))
}

fn int(value: Object<'_, '_>, field: &'static str) -> MResult<i64> {
    match value {
        Object::Integer(s) => s
            .parse::<i64>()
            .map_err(|_| invalid(field, format!("{s} is out of range"))),
        _ => Err(invalid(field, "must be an integer")),
    }
}

fn non_negative(value: Object<'_, '_>, field: &'static str) -> MResult<u64> {
    let n = int(value, field)?;
    u64::try_from(n).map_err(|_| invalid(field, format!("is negative ({n})")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid single-file torrent of `len` bytes in 16 KiB pieces.
    fn single(len: u64) -> Vec<u8> {
        let pieces = len.div_ceil(16384) as usize * 20;
        let mut v = format!(
            "d8:announce22:http://t:8998/announce4:infod6:lengthi{len}e4:name4:file12:piece lengthi16384e6:pieces{pieces}:"
        )
        .into_bytes();
        v.extend(std::iter::repeat_n(7u8, pieces));
        v.extend_from_slice(b"ee");
        v
    }

    fn multi(paths: &[&str]) -> Vec<u8> {
        let mut files = String::new();
        for p in paths {
            let comps: String = p.split('|').map(|c| format!("{}:{}", c.len(), c)).collect();
            files.push_str(&format!("d6:lengthi10e4:pathl{comps}ee"));
        }
        let total = 10 * paths.len() as u64;
        let pieces = total.div_ceil(16384) as usize * 20;
        let mut v =
            format!("d4:infod5:filesl{files}e4:name3:dir12:piece lengthi16384e6:pieces{pieces}:")
                .into_bytes();
        v.extend(std::iter::repeat_n(7u8, pieces));
        v.extend_from_slice(b"ee");
        v
    }

    #[test]
    fn parses_a_single_file_torrent_and_keeps_info_bytes() {
        let bytes = single(40000);
        let m = Metainfo::from_bytes(&bytes).unwrap();
        assert_eq!(m.name, "file");
        assert_eq!(m.total_length(), 40000);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.announce.as_deref(), Some("http://t:8998/announce"));
        assert_eq!(m.to_bytes(), bytes, "round trip is byte-identical");
        let start = bytes.windows(6).position(|w| w == b"4:info").unwrap() + 6;
        let expected: [u8; 20] = Sha1::digest(&bytes[start..bytes.len() - 1]).into();
        assert_eq!(m.info_hash(), expected);
    }

    #[test]
    fn parses_a_multi_file_torrent() {
        let m = Metainfo::from_bytes(&multi(&["a", "sub|b"])).unwrap();
        assert!(!m.single_file);
        assert_eq!(m.files[1].path, vec!["sub", "b"]);
        assert_eq!(m.total_length(), 20);
    }

    fn err(bytes: &[u8]) -> MetainfoError {
        Metainfo::from_bytes(bytes).unwrap_err()
    }

    #[test]
    fn rejects_paths_that_escape_the_destination() {
        for (path, reason) in [
            ("..|etc|passwd", "`.` or `..` component"),
            ("a|..|..|x", "`.` or `..` component"),
            (
                "/etc|passwd",
                "component holds a slash (absolute or nested path)",
            ),
            (
                "a/../../b",
                "component holds a slash (absolute or nested path)",
            ),
            ("a||b", "empty component"),
            (".", "`.` or `..` component"),
        ] {
            match err(&multi(&[path])) {
                MetainfoError::UnsafePath { reason: r, .. } => assert_eq!(r, reason, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        // An empty path list.
        let bad = multi(&["x"]).replace_bytes(b"4:pathl1:xe", b"4:pathle");
        assert!(matches!(
            err(&bad),
            MetainfoError::UnsafePath {
                reason: "empty path",
                ..
            }
        ));
        // A name that is itself a path.
        let bad = single(10).replace_bytes(b"4:name4:file", b"4:name4:../x");
        assert!(matches!(err(&bad), MetainfoError::UnsafePath { .. }));
    }

    #[test]
    fn rejects_duplicate_and_conflicting_paths() {
        assert!(matches!(
            err(&multi(&["a", "a"])),
            MetainfoError::UnsafePath {
                reason: "appears twice in the torrent",
                ..
            }
        ));
        assert!(matches!(
            err(&multi(&["a", "a|b"])),
            MetainfoError::UnsafePath {
                reason: "lies under a path that is also a file",
                ..
            }
        ));
        assert!(matches!(
            err(&multi(&["a|b", "a"])),
            MetainfoError::UnsafePath { .. }
        ));
    }

    #[test]
    fn rejects_bad_lengths() {
        let neg = single(10).replace_bytes(b"i10e", b"i-10e");
        assert_eq!(
            err(&neg),
            MetainfoError::Invalid {
                field: "length",
                problem: "is negative (-10)".into()
            }
        );
        let huge = single(10).replace_bytes(b"i10e", b"i99999999999999999999e");
        assert!(matches!(
            err(&huge),
            MetainfoError::Invalid {
                field: "length",
                ..
            }
        ));
        let two = multi(&["a", "b"]).replace_bytes(b"i10e", b"i9223372036854775807e");
        assert_eq!(err(&two), MetainfoError::LengthOverflow);
        let zero_pl = single(10).replace_bytes(b"i16384e", b"i0e");
        assert!(matches!(
            err(&zero_pl),
            MetainfoError::Invalid {
                field: "piece length",
                ..
            }
        ));
    }

    #[test]
    fn rejects_a_pieces_field_of_the_wrong_size() {
        // 40000 bytes need 3 pieces; claim 2.
        let bytes = single(40000).replace_bytes(b"6:pieces60:", b"6:pieces40:");
        let bytes = [&bytes[..bytes.len() - 22], b"ee"].concat();
        assert!(matches!(
            err(&bytes),
            MetainfoError::PiecesLength {
                expected: 60,
                actual: 40,
                ..
            }
        ));
        let odd = single(10).replace_bytes(b"6:pieces20:", b"6:pieces19:");
        let odd = [&odd[..odd.len() - 3], b"ee"].concat();
        assert!(matches!(
            err(&odd),
            MetainfoError::Invalid {
                field: "pieces",
                ..
            }
        ));
    }

    #[test]
    fn rejects_invalid_bencode() {
        let good = single(10);
        assert!(
            matches!(err(&good[..good.len() - 1]), MetainfoError::Bencode(_)),
            "truncated"
        );
        assert_eq!(
            err(&[&good[..], b"x"].concat()),
            MetainfoError::TrailingData
        );
        assert_eq!(
            err(&[&good[..], b"i1e"].concat()),
            MetainfoError::TrailingData
        );
        assert!(matches!(err(b""), MetainfoError::Bencode(_)));
        assert!(matches!(err(b"i1e"), MetainfoError::Bencode(_)));
        let deep = [vec![b'l'; 100_000], vec![b'e'; 100_000]].concat();
        assert!(matches!(
            err(&[b"d1:x".as_slice(), &deep, b"e"].concat()),
            MetainfoError::Bencode(_)
        ));
        assert!(matches!(
            err(b"d4:info99999999999999999999:xe"),
            MetainfoError::Bencode(_)
        ));
        assert!(matches!(
            err(b"d4:infod4:name18446744073709551616:e"),
            MetainfoError::Bencode(_)
        ));
        // Unsorted keys are not canonical bencode.
        assert!(matches!(
            err(b"d4:infod4:name1:a6:lengthi1eee"),
            MetainfoError::Bencode(_)
        ));
        assert_eq!(err(b"de"), MetainfoError::Missing("info"));
    }

    /// A torrent of one 10-byte file `a` and, after it, `entries` (bencoded
    /// file dictionaries), with 16 KiB pieces and the given piece hashes.
    fn tree(entries: &str, total: u64, hashes: &[[u8; 20]]) -> Vec<u8> {
        let pieces: Vec<u8> = hashes.concat();
        assert_eq!(pieces.len() as u64, total.div_ceil(16384) * 20);
        let mut v = format!(
            "d4:infod5:filesld6:lengthi10e4:pathl1:aee{entries}e4:name3:dir12:piece lengthi16384e6:pieces{}:",
            pieces.len()
        )
        .into_bytes();
        v.extend(pieces);
        v.extend_from_slice(b"ee");
        v
    }

    #[test]
    fn reads_links_executables_and_pads() {
        let entries = "d4:attr1:x6:lengthi5e4:pathl3:binee\
                       d4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathl1:aee";
        let m = Metainfo::from_bytes(&tree(entries, 15, &[[1; 20]])).unwrap();
        assert!(m.files[1].executable);
        assert_eq!(m.files[2].symlink.as_deref(), Some(&["a".to_string()][..]));
        assert_eq!(m.total_length(), 15);
    }

    /// BEP 47 `sha1`: read as 20 bytes and kept through a re-encoding (the
    /// info-hash covers it); any other length is refused.
    #[test]
    fn reads_the_per_file_sha1_and_refuses_a_bad_one() {
        let entries = format!("d6:lengthi5e4:pathl1:be4:sha120:{}e", "s".repeat(20));
        let m = Metainfo::from_bytes(&tree(&entries, 15, &[[1; 20]])).unwrap();
        assert_eq!(m.files[1].sha1, Some([b's'; 20]));
        assert_eq!(m.files[0].sha1, None);
        let again = Metainfo::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(again.info_hash, m.info_hash);
        let short = "d6:lengthi5e4:pathl1:be4:sha13:abce";
        assert_eq!(
            Metainfo::from_bytes(&tree(short, 15, &[[1; 20]])).unwrap_err(),
            invalid("sha1", "must be 20 bytes")
        );
    }

    /// Hostile trees are refused when read: nothing of theirs is written.
    #[test]
    fn rejects_hostile_trees() {
        let zeros: [u8; 20] = Sha1::digest(vec![0u8; 16384]).into();
        for (entries, total, hashes, reason) in [
            (
                "d4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathl2:..3:etcee",
                10,
                vec![[1; 20]],
                "is a link that is absolute or leaves the tree",
            ),
            (
                "d4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathl4:/etcee",
                10,
                vec![[1; 20]],
                "is a link that is absolute or leaves the tree",
            ),
            (
                "d4:attr1:l6:lengthi0e4:pathl3:libe12:symlink pathl1:aeed6:lengthi5e4:pathl3:lib4:evilee",
                15,
                vec![[1; 20]],
                "lies under a path that is a link",
            ),
            (
                "d4:attr1:l6:lengthi3e4:pathl4:linke12:symlink pathl1:aee",
                13,
                vec![[1; 20]],
                "is a link with data (a link's length is 0)",
            ),
            (
                "d6:lengthi5e4:pathl1:aee",
                15,
                vec![[1; 20]],
                "appears twice in the torrent",
            ),
            (
                "d6:lengthi5e4:pathl1:a1:bee",
                15,
                vec![[1; 20]],
                "lies under a path that is also a file",
            ),
            (
                // A pad covering a whole piece whose hash is not zeros'.
                "d4:attr1:p6:lengthi32758e4:pathl4:.pad5:32758eed6:lengthi1e4:pathl1:bee",
                32769,
                vec![[1; 20], [2; 20], [3; 20]],
                "is a pad file that holds data (BEP 47 pads are zeros)",
            ),
        ] {
            match err(&tree(entries, total, &hashes)) {
                MetainfoError::UnsafePath { reason: r, .. } => assert_eq!(r, reason, "{entries}"),
                other => panic!("{entries}: {other:?}"),
            }
        }
        // The same pad whose piece hashes as zeros is fine.
        let fine = tree(
            "d4:attr1:p6:lengthi32758e4:pathl4:.pad5:32758eed6:lengthi1e4:pathl1:bee",
            32769,
            &[[1; 20], zeros, [3; 20]],
        );
        assert!(Metainfo::from_bytes(&fine).is_ok());
    }

    /// `murder empty dirs` names directories as safely as `path` names
    /// files: never out of the tree, never through a link, never where a
    /// file goes; a tree's own empty directories read back as written.
    #[test]
    fn reads_empty_dirs_and_refuses_hostile_ones() {
        let link = "d4:attr1:l6:lengthi0e4:pathl4:linke12:symlink pathl1:aee";
        let with_dirs = |dirs: &str| {
            tree(link, 10, &[[1; 20]]).replace_bytes(
                b"e4:name3:dir",
                format!("e17:murder empty dirs{dirs}4:name3:dir").as_bytes(),
            )
        };
        let m = Metainfo::from_bytes(&with_dirs("ll3:log5:cacheel3:tmpee")).unwrap();
        assert_eq!(m.empty_dirs, [vec!["log", "cache"], vec!["tmp"]]);
        for (dirs, reason) in [
            ("ll2:..ee", "`.` or `..` component"),
            ("ll3:log2:..ee", "`.` or `..` component"),
            (
                "ll4:/etcee",
                "component holds a slash (absolute or nested path)",
            ),
            ("ll0:ee", "empty component"),
            ("llee", "empty path"),
            (
                "ll4:linkee",
                "is a directory at or under a path that is a link",
            ),
            (
                "ll4:link3:subee",
                "is a directory at or under a path that is a link",
            ),
            (
                "ll1:aee",
                "is a directory at or under a path that is a file",
            ),
            (
                "ll1:a1:bee",
                "is a directory at or under a path that is a file",
            ),
            ("ll3:logel3:logee", "appears twice in the torrent"),
        ] {
            match err(&with_dirs(dirs)) {
                MetainfoError::UnsafePath { reason: r, .. } => assert_eq!(r, reason, "{dirs}"),
                other => panic!("{dirs}: {other:?}"),
            }
        }
        assert!(matches!(
            err(&with_dirs("i3e")),
            MetainfoError::Invalid {
                field: "murder empty dirs",
                ..
            }
        ));
        let one = single(10).replace_bytes(b"4:name", b"17:murder empty dirsll3:logee4:name");
        assert!(matches!(
            err(&one),
            MetainfoError::Invalid {
                field: "murder empty dirs",
                ..
            }
        ));
    }

    /// A path longer than a path may be (4,096 bytes) is refused at
    /// once: a single path of 200,000 components (a 600 KB torrent) made
    /// the check build every prefix of it, about 40 GB in all.
    #[test]
    fn rejects_a_path_longer_than_a_path_may_be() {
        let deep = format!("d6:lengthi5e4:pathl{}ee", "1:b".repeat(200_000));
        let started = std::time::Instant::now();
        match err(&tree(&deep, 15, &[[1; 20]])) {
            MetainfoError::UnsafePath { path, reason } => {
                assert_eq!(reason, "is longer than a path may be (4,096 bytes)");
                assert!(
                    path.len() < 200,
                    "the error shows the start of the path only"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn rejects_v2_only_torrents() {
        let v2 = b"d4:infod9:file treed1:ad0:d6:lengthi1eeee12:meta versioni2e4:name1:a12:piece lengthi16384eee";
        assert_eq!(err(v2), MetainfoError::V2Only);
    }

    trait ReplaceBytes {
        fn replace_bytes(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }
    impl ReplaceBytes for Vec<u8> {
        fn replace_bytes(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let at = self
                .windows(from.len())
                .position(|w| w == from)
                .expect("pattern in test torrent");
            [&self[..at], to, &self[at + from.len()..]].concat()
        }
    }
}
