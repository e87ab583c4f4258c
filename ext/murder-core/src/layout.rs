//! Where each byte of a torrent lives: the pieces are one stream of bytes
//! laid over the files in order, so a piece may span many small files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::metainfo::FileEntry;

#[derive(Debug, Clone)]
struct Extent {
    offset: u64,
    length: u64,
    pad: bool,
}

/// The byte ranges of the files within the torrent's stream.
#[derive(Debug, Clone)]
pub struct Layout {
    extents: Vec<Extent>,
    total: u64,
    piece_length: u64,
}

/// A part of one file: `len` bytes at `file_offset` of file `file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub file: usize,
    pub file_offset: u64,
    pub len: u64,
    /// Pad-file bytes are zeros and live on no disk.
    pub pad: bool,
}

impl Layout {
    pub fn new(files: &[FileEntry], piece_length: u64) -> Self {
        let mut offset = 0;
        let extents = files
            .iter()
            .map(|f| {
                let e = Extent {
                    offset,
                    length: f.length,
                    pad: f.pad,
                };
                offset += f.length;
                e
            })
            .collect();
        Layout {
            extents,
            total: offset,
            piece_length,
        }
    }

    pub fn total_length(&self) -> u64 {
        self.total
    }

    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    pub fn piece_count(&self) -> usize {
        self.total.div_ceil(self.piece_length) as usize
    }

    /// Offset and length of a piece (the last one may be short).
    pub fn piece_range(&self, piece: usize) -> (u64, u64) {
        let start = piece as u64 * self.piece_length;
        (start, self.piece_length.min(self.total - start))
    }

    /// The file parts that hold `len` bytes from `offset`, in order.
    /// Empty files hold no bytes and never appear.
    pub fn spans(&self, offset: u64, len: u64) -> impl Iterator<Item = Span> + '_ {
        let end = (offset + len).min(self.total);
        // First extent whose end lies beyond `offset`.
        let first = self
            .extents
            .partition_point(|e| e.offset + e.length <= offset);
        self.extents[first..]
            .iter()
            .enumerate()
            .take_while(move |(_, e)| e.offset < end)
            .filter(|(_, e)| e.length > 0)
            .map(move |(i, e)| {
                let from = offset.max(e.offset);
                let to = end.min(e.offset + e.length);
                Span {
                    file: first + i,
                    file_offset: from - e.offset,
                    len: to - from,
                    pad: e.pad,
                }
            })
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so `path` holds either the old content or all of the new.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::InvalidArgument(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: u64) -> FileEntry {
        FileEntry {
            path: vec!["f".into()],
            length: len,
            pad: false,
        }
    }

    #[test]
    fn a_piece_spans_files_and_skips_empty_ones() {
        let layout = Layout::new(&[file(5), file(0), file(3), file(10)], 8);
        assert_eq!(layout.piece_count(), 3);
        let spans: Vec<_> = layout.spans(0, 8).collect();
        assert_eq!(
            spans,
            vec![
                Span {
                    file: 0,
                    file_offset: 0,
                    len: 5,
                    pad: false
                },
                Span {
                    file: 2,
                    file_offset: 0,
                    len: 3,
                    pad: false
                },
            ]
        );
        assert_eq!(layout.piece_range(2), (16, 2));
        let last: Vec<_> = layout.spans(16, 2).collect();
        assert_eq!(
            last,
            vec![Span {
                file: 3,
                file_offset: 8,
                len: 2,
                pad: false
            }]
        );
        let middle: Vec<_> = layout.spans(4, 6).collect();
        assert_eq!(middle.len(), 3);
        assert_eq!(middle.iter().map(|s| s.len).sum::<u64>(), 6);
    }

    #[test]
    fn atomic_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.torrent");
        write_atomically(&path, b"abc").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(write_atomically(&dir.path().join("missing/x"), b"abc").is_err());
    }
}
