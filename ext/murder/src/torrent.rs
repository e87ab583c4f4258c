//! `Murder::Torrent`: a parsed, validated .torrent (murder_core::Metainfo).

use std::path::PathBuf;
use std::sync::Arc;

use magnus::{block::Proc, function, method, prelude::*, Error, RModule, RString, Ruby};
use murder_core::hashing::{check_pieces, DataSource};
use murder_core::{create_torrent, CreateOptions, Metainfo, Progress};

use crate::{errors::to_ruby, nogvl};

#[magnus::wrap(class = "Murder::Torrent", free_immediately, size)]
pub struct Torrent(Arc<Metainfo>);

pub fn define(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let class = module.define_class("Torrent", ruby.class_object())?;
    class.define_singleton_method("__create", function!(create, 8))?;
    class.define_singleton_method("__load", function!(load, 1))?;
    class.define_singleton_method("__parse", function!(parse, 1))?;
    class.define_method("info_hash", method!(Torrent::info_hash, 0))?;
    class.define_method("name", method!(Torrent::name, 0))?;
    class.define_method("announce", method!(Torrent::announce, 0))?;
    class.define_method("total_length", method!(Torrent::total_length, 0))?;
    class.define_method("data_length", method!(Torrent::data_length, 0))?;
    class.define_method("piece_length", method!(Torrent::piece_length, 0))?;
    class.define_method("piece_count", method!(Torrent::piece_count, 0))?;
    class.define_method("private?", method!(Torrent::is_private, 0))?;
    class.define_method("single_file?", method!(Torrent::is_single_file, 0))?;
    class.define_method("__files", method!(Torrent::files, 0))?;
    class.define_method("empty_dirs", method!(Torrent::empty_dirs, 0))?;
    class.define_method("to_bencode", method!(Torrent::to_bencode, 0))?;
    class.define_method("__write", method!(Torrent::write, 1))?;
    class.define_method("__verify", method!(Torrent::verify, 1))?;
    Ok(())
}

/// Calls the Ruby block (if any) with bytes done and bytes in all.
fn report(progress: &Progress, block: &Option<Proc>) -> Result<(), Error> {
    if let Some(block) = block {
        let (done, total) = progress.snapshot();
        block.call::<_, magnus::Value>((done, total))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn create(
    ruby: &Ruby,
    path: PathBuf,
    trackers: Vec<String>,
    piece_length: Option<u64>,
    private: bool,
    comment: Option<String>,
    align: bool,
    hash_cache: Option<PathBuf>,
    exclude: Vec<String>,
) -> Result<Torrent, Error> {
    let block = ruby.block_proc().ok();
    let Some((tracker, more_trackers)) = trackers.split_first() else {
        return Err(to_ruby(
            ruby,
            murder_core::Error::InvalidArgument("a torrent needs a tracker".into()),
        ));
    };
    let options = CreateOptions {
        tracker: tracker.clone(),
        more_trackers: more_trackers.to_vec(),
        piece_length,
        private,
        comment,
        align,
        hash_cache,
        exclude,
        leave_out: Vec::new(),
    };
    let progress = Progress::new();
    let result = nogvl::run(
        ruby,
        &progress,
        || create_torrent(&path, &options, &progress),
        || report(&progress, &block),
    )?;
    let made = result.map_err(|e| to_ruby(ruby, e))?;
    Ok(Torrent(Arc::new(made)))
}

fn load(ruby: &Ruby, path: PathBuf) -> Result<Torrent, Error> {
    Metainfo::load(&path)
        .map(|m| Torrent(Arc::new(m)))
        .map_err(|e| to_ruby(ruby, e))
}

fn parse(ruby: &Ruby, bytes: RString) -> Result<Torrent, Error> {
    // SAFETY: the slice is copied before any other Ruby call can move it.
    let bytes = unsafe { bytes.as_slice() }.to_vec();
    Metainfo::from_bytes(&bytes)
        .map(|m| Torrent(Arc::new(m)))
        .map_err(|e| to_ruby(ruby, e.into()))
}

impl Torrent {
    pub fn metainfo(&self) -> &murder_core::Metainfo {
        &self.0
    }

    pub fn metainfo_arc(&self) -> Arc<Metainfo> {
        self.0.clone()
    }

    fn info_hash(&self) -> String {
        self.0.info_hash_hex()
    }

    fn name(&self) -> String {
        self.0.name.clone()
    }

    fn announce(&self) -> Option<String> {
        self.0.announce.clone()
    }

    fn total_length(&self) -> u64 {
        self.0.total_length()
    }

    fn data_length(&self) -> u64 {
        self.0.data_length()
    }

    fn piece_length(&self) -> u64 {
        self.0.piece_length
    }

    fn piece_count(&self) -> usize {
        self.0.piece_count()
    }

    fn is_private(&self) -> bool {
        self.0.private
    }

    fn is_single_file(&self) -> bool {
        self.0.single_file
    }

    /// `[path, length]` pairs, pad files left out.
    fn files(&self) -> Vec<(String, u64)> {
        self.0
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| (f.path.join("/"), f.length))
            .collect()
    }

    fn empty_dirs(&self) -> Vec<String> {
        self.0.empty_dirs.iter().map(|d| d.join("/")).collect()
    }

    fn to_bencode(ruby: &Ruby, rb_self: &Self) -> RString {
        ruby.str_from_slice(&rb_self.0.to_bytes())
    }

    fn write(ruby: &Ruby, rb_self: &Self, path: PathBuf) -> Result<(), Error> {
        rb_self.0.write(path).map_err(|e| to_ruby(ruby, e))
    }

    /// Which pieces of the data at `data_path` are complete and correct.
    fn verify(ruby: &Ruby, rb_self: &Self, data_path: PathBuf) -> Result<Vec<bool>, Error> {
        let block = ruby.block_proc().ok();
        let meta = rb_self.0.clone();
        let progress = Progress::new();
        let source = DataSource::for_torrent(&meta, &data_path);
        nogvl::run(
            ruby,
            &progress,
            || check_pieces(&source, &meta.pieces, &progress),
            || report(&progress, &block),
        )?
        .map_err(|e| to_ruby(ruby, e))
    }
}
