//! `murder`: the command every host of a deploy runs. A thin front end over
//! murder-core; each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the tracker allocates per request and per connection, and
/// glibc's malloc was an eighth of its CPU (bench/tracker).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod daemon;
mod info;
mod make_torrent;
mod relay;
mod serve_file;
mod signals;
mod stop;
mod ticket;
mod tracker;
mod transfer;

#[derive(Parser)]
#[command(
    name = "murder",
    version,
    about = "BitTorrent deploys for fleets of servers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a .torrent of a file or a directory tree, hashing on every core.
    MakeTorrent(make_torrent::Args),
    /// Show what a .torrent holds.
    Info(info::Args),
    /// Run the HTTP tracker (allow-listed; port 8998 by default).
    Tracker(tracker::Args),
    /// Seed a torrent's data until stopped.
    Seed(transfer::SeedArgs),
    /// Download a torrent; exit 0 once the data is complete and verified,
    /// then keep seeding in the background for --linger seconds.
    Peer(transfer::PeerArgs),
    /// Stop a background murder process by its pidfile (quietly, if none runs).
    Stop(stop::Args),
    /// Hand one file to hosts that fetch it (a host passing the murder
    /// binary on to the next ones), then exit.
    ServeFile(serve_file::Args),
    /// Pass connections on to other addresses, until stopped (a deploy's
    /// way to servers that cannot connect to the deploying machine).
    Relay(relay::Args),
}

/// A release of thousands of files keeps many open; the usual soft limit
/// of 1,024 descriptors is far below what the kernel allows.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Rust ignores SIGPIPE, so printing to a closed pipe (`murder info X |
/// head`) panics. The commands that only print end quietly instead, as
/// `cat` does; the long-running ones keep it ignored and see EPIPE.
fn end_quietly_on_closed_pipe() {
    // SAFETY: resetting a signal to its default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// One line on standard output, if anyone still reads it. A download or a
/// server whose reader went away (the deployer's SSH session, `| head`)
/// goes on without its reports, where println! would panic.
pub(crate) fn print_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// CPU seconds this process spent so far, user and system, all threads
/// (`None` if the kernel will not say): what a host paid for its part of a
/// deploy, where a deploy's wall time may be set by CPU shared with others.
pub(crate) fn cpu_seconds() -> Option<f64> {
    // SAFETY: getrusage fills the zeroed struct it is given, nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    }?;
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(((secs(usage.ru_utime) + secs(usage.ru_stime)) * 1000.0).round() / 1000.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_file_limit();
    if matches!(
        cli.command,
        Command::Info(_) | Command::MakeTorrent(_) | Command::Stop(_)
    ) {
        end_quietly_on_closed_pipe();
    }
    // MURDER_LOG takes tracing's filter syntax ("debug", "murder_core=debug").
    let filter = tracing_subscriber::EnvFilter::try_from_env("MURDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::MakeTorrent(args) => make_torrent::run(args),
        Command::Info(args) => info::run(args),
        Command::Tracker(args) => tracker::run(args),
        Command::Seed(args) => transfer::seed(args),
        Command::Peer(args) => transfer::peer(args),
        Command::Stop(args) => stop::run(args),
        Command::ServeFile(args) => serve_file::run(args),
        Command::Relay(args) => relay::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("murder: {e}");
            ExitCode::FAILURE
        }
    }
}
