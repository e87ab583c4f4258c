//! `murder make-torrent PATH --tracker HOST:PORT -o OUT`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use murder_core::{create_torrent_with_cache, CreateOptions, Progress};

use murder_core::units::{human_bytes, parse_size};

#[derive(clap::Args)]
pub struct Args {
    /// File or directory to share.
    path: PathBuf,
    /// Tracker as HOST:PORT (or a full announce URL). Repeat it for more
    /// trackers (BEP 12 announce-list): murder peers announce to all of
    /// them, so a deploy goes on while any one answers.
    #[arg(long, short, required = true)]
    tracker: Vec<String>,
    /// Where to write the .torrent.
    #[arg(long, short)]
    output: PathBuf,
    /// Bytes per piece, a power of two (e.g. 256K, 1M); chosen from the size if not given.
    #[arg(long, value_parser = parse_size)]
    piece_length: Option<u64>,
    /// Mark the torrent private (BEP 27): peers come only from the tracker.
    #[arg(long)]
    private: bool,
    /// A comment stored in the torrent.
    #[arg(long)]
    comment: Option<String>,
    /// For a directory: start every file on a piece boundary (BEP 47 pad
    /// files), mark executables, keep symbolic links as links. Hosts can
    /// then reuse files they hold already.
    #[arg(long)]
    align: bool,
    /// With --align: remember what each file hashed to in FILE and hash
    /// only the files that changed since.
    #[arg(long, value_name = "FILE", requires = "align")]
    hash_cache: Option<PathBuf>,
    /// With --align: leave out files and directories named like GLOB
    /// (repeatable), e.g. --exclude '.git*'.
    #[arg(long, value_name = "GLOB", requires = "align")]
    exclude: Vec<String>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let with_cache = args.hash_cache.is_some();
    let options = CreateOptions {
        tracker: args.tracker[0].clone(),
        more_trackers: args.tracker[1..].to_vec(),
        piece_length: args.piece_length,
        private: args.private,
        comment: args.comment,
        align: args.align,
        hash_cache: args.hash_cache,
        exclude: args.exclude,
        leave_out: vec![args.output.clone()],
    };
    let progress = Arc::new(Progress::new());
    let started = Instant::now();
    let (done, result) = std::sync::mpsc::channel();
    {
        let progress = progress.clone();
        let path = args.path.clone();
        std::thread::spawn(move || {
            // The receiver only goes away if this command is already failing.
            let _ = done.send(create_torrent_with_cache(&path, &options, &progress));
        });
    }
    // indicatif draws only on a terminal, so logs stay clean.
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "hashing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .map_err(|e| e.to_string())?,
    );
    // Wake for the bar every 50 ms, and the moment the hashing is done.
    let (torrent, cache) = loop {
        match result.recv_timeout(Duration::from_millis(50)) {
            Ok(made) => break made?,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let (done, total) = progress.snapshot();
                bar.set_length(total);
                bar.set_position(done);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err("hashing thread panicked".into())
            }
        }
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    torrent.write(&args.output)?;
    if !args.quiet {
        let total = torrent.total_length();
        println!("{}", args.output.display());
        println!("  info-hash  {}", torrent.info_hash_hex());
        println!("  name       {}", torrent.name);
        println!(
            "  size       {} in {} files{}",
            human_bytes(torrent.data_length()),
            torrent.files.iter().filter(|f| !f.pad).count(),
            crate::info::padding(&torrent)
        );
        if !torrent.empty_dirs.is_empty() {
            println!("  empty dirs {}", torrent.empty_dirs.len());
        }
        println!(
            "  pieces     {} of {}",
            torrent.piece_count(),
            human_bytes(torrent.piece_length)
        );
        println!(
            "  hashed in  {seconds:.2} s ({}/s)",
            human_bytes((total as f64 / seconds.max(1e-9)) as u64)
        );
        if with_cache {
            println!(
                "  cache      {} files hashed ({}), {} unchanged",
                cache.files_hashed,
                human_bytes(cache.bytes_hashed),
                cache.files_cached
            );
        }
    }
    Ok(())
}
