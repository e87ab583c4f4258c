//! `murder`: the command every host of a deploy runs. A thin front end over
//! murder-core; each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod info;
mod make_torrent;
mod units;

#[derive(Parser)]
#[command(name = "murder", version, about = "BitTorrent deploys for fleets of servers")]
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::MakeTorrent(args) => make_torrent::run(args),
        Command::Info(args) => info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("murder: {e}");
            ExitCode::FAILURE
        }
    }
}
