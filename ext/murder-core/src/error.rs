//! Typed errors of the engine. Front ends turn each into one clear line
//! (the CLI) or a `Murder::Error` subclass (Ruby).

use std::path::PathBuf;

/// Why a .torrent file was refused. Every variant names the problem so a
/// person reading one line knows what is wrong with which field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetainfoError {
    #[error("not valid bencode: {0}")]
    Bencode(String),
    #[error("not valid bencode: trailing data after the top-level dictionary")]
    TrailingData,
    #[error("torrent is {size} bytes, more than the {limit} bytes a .torrent may have")]
    TooLarge { size: usize, limit: usize },
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("field `{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("unsafe file path {path:?}: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("file lengths add up to more than 2^63 bytes")]
    LengthOverflow,
    #[error("`pieces` is {actual} bytes, but {total_length} bytes in pieces of {piece_length} need {expected} (20 per piece)")]
    PiecesLength {
        actual: usize,
        expected: u64,
        total_length: u64,
        piece_length: u64,
    },
    #[error("v2-only torrents are not supported: `info` has no v1 `pieces`")]
    V2Only,
}

/// Every error the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid torrent: {0}")]
    InvalidTorrent(#[from] MetainfoError),
    /// A .torrent file that was read and refused: which one, with several.
    #[error("{}: invalid torrent: {source}", path.display())]
    InvalidTorrentFile {
        path: PathBuf,
        #[source]
        source: MetainfoError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: nothing to share (no files)")]
    NothingToShare(PathBuf),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{path}: file changed while it was being hashed")]
    ChangedWhileHashing { path: PathBuf },
    #[error("cancelled")]
    Cancelled,
    /// A session that failed (the reason names what and where).
    #[error("{0}")]
    Failed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An error of walking the tree at `root`, named by the entry it met.
    pub(crate) fn walk(root: &std::path::Path, e: walkdir::Error) -> Self {
        let path = e.path().unwrap_or(root).to_path_buf();
        Error::io(path, e.into())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
