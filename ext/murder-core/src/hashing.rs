//! SHA-1 over pieces on every core. Work is split into runs of consecutive
//! pieces so each thread reads its own part of the stream sequentially with
//! large positional reads, keeping one file open at a time: a tree of
//! thousands of small files hashes as fast as one big file, and the kernel's
//! file table never has to grow under many threads.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::metainfo::Metainfo;
use crate::progress::Progress;

/// Where the bytes of a torrent are on disk.
#[derive(Debug, Clone)]
pub struct DataSource {
    /// One per file of the layout; `None` for pad files (zeros).
    paths: Vec<Option<PathBuf>>,
    layout: Layout,
}

impl DataSource {
    /// `data_path` is the file of a single-file torrent, or the directory
    /// holding the files of a multi-file one (the directory named `name`).
    pub fn for_torrent(meta: &Metainfo, data_path: &Path) -> Self {
        let paths = meta
            .files
            .iter()
            .map(|f| {
                if f.pad {
                    None
                } else if meta.single_file {
                    Some(data_path.to_path_buf())
                } else {
                    Some(f.path_under(data_path))
                }
            })
            .collect();
        DataSource {
            paths,
            layout: meta.layout(),
        }
    }

    pub(crate) fn new(paths: Vec<PathBuf>, layout: Layout) -> Self {
        DataSource {
            paths: paths.into_iter().map(Some).collect(),
            layout,
        }
    }
}

/// Hashes every piece. Any file that cannot be read fully is an error.
pub fn hash_pieces(src: &DataSource, progress: &Progress) -> Result<Vec<[u8; 20]>> {
    for_each_piece(src, progress, |_, data| {
        data.map(|d| Sha1::digest(d).into())
    })
}

/// Which pieces on disk match `expected`. A file that is missing, short,
/// or not a file (a directory where it should be, or under a file) only
/// makes its pieces incomplete: that is data that is not there. A file that
/// is there but cannot be read (permission denied, an I/O error) is an
/// error naming it, never taken for other data; so is being cancelled.
pub fn check_pieces(
    src: &DataSource,
    expected: &[[u8; 20]],
    progress: &Progress,
) -> Result<Vec<bool>> {
    for_each_piece(src, progress, |piece, data| match data {
        Ok(d) => Ok(<[u8; 20]>::from(Sha1::digest(d)) == expected[piece]),
        Err(e) if is_absent(&e) => Ok(false),
        Err(e) => Err(e),
    })
}

/// Whether a read failed because the data is not there, rather than because
/// what is there cannot be read.
fn is_absent(e: &Error) -> bool {
    match e {
        Error::ChangedWhileHashing { .. } => true,
        Error::Io { source, .. } => matches!(
            source.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory
        ),
        _ => false,
    }
}

fn for_each_piece<T, F>(src: &DataSource, progress: &Progress, f: F) -> Result<Vec<T>>
where
    T: Send,
    F: Fn(usize, Result<&[u8]>) -> Result<T> + Sync,
{
    let layout = &src.layout;
    let count = layout.piece_count();
    progress.start(layout.total_length());
    // Several runs per thread balance the load; each run stays sequential.
    let run = (count / (rayon::current_num_threads() * 8)).max(1);
    let runs: Vec<Range<usize>> = (0..count)
        .step_by(run)
        .map(|s| s..(s + run).min(count))
        .collect();
    let results: Result<Vec<Vec<T>>> = runs
        .into_par_iter()
        .map_init(
            || PieceReader::new(src),
            |reader, pieces| {
                let mut out = Vec::with_capacity(pieces.len());
                for piece in pieces {
                    if progress.is_cancelled() {
                        return Err(Error::Cancelled);
                    }
                    let data = reader.read(piece);
                    out.push(f(piece, data)?);
                    progress.advance(layout.piece_range(piece).1);
                }
                Ok(out)
            },
        )
        .collect();
    Ok(results?.into_iter().flatten().collect())
}

/// Reads whole pieces into one reused buffer, keeping the last file open.
struct PieceReader<'a> {
    src: &'a DataSource,
    open: Option<(usize, File)>,
    buf: Vec<u8>,
}

impl<'a> PieceReader<'a> {
    fn new(src: &'a DataSource) -> Self {
        PieceReader {
            src,
            open: None,
            buf: vec![0; src.layout.piece_length() as usize],
        }
    }

    fn read(&mut self, piece: usize) -> Result<&[u8]> {
        let layout = &self.src.layout;
        let (offset, len) = layout.piece_range(piece);
        let mut at = 0usize;
        for span in layout.spans(offset, len) {
            let dest = &mut self.buf[at..at + span.len as usize];
            at += span.len as usize;
            let Some(path) = &self.src.paths[span.file] else {
                dest.fill(0);
                continue;
            };
            if self.open.as_ref().map(|(i, _)| *i) != Some(span.file) {
                self.open = None; // close before opening: one file at a time
                let file = File::open(path).map_err(|e| Error::io(path, e))?;
                self.open = Some((span.file, file));
            }
            if let Some((_, file)) = &self.open {
                read_exact_at(file, dest, span.file_offset, path)?;
            }
        }
        Ok(&self.buf[..at])
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::ChangedWhileHashing {
                path: path.to_path_buf(),
            }
        } else {
            Error::io(path, e)
        }
    })
}
