//! `murder stop --pidfile PATH`: stops a daemon started with that pidfile;
//! succeeds quietly when nothing runs.

use std::path::PathBuf;
use std::time::Duration;

use crate::daemon;

#[derive(clap::Args)]
pub struct Args {
    /// The pidfile the process was started with.
    #[arg(long)]
    pidfile: PathBuf,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, value_parser = clap::value_parser!(u64).range(..=86_400), default_value_t = 10)]
    timeout: u64,
    /// Say what happened.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let outcome = daemon::stop(&args.pidfile, Duration::from_secs(args.timeout))?;
    if args.verbose {
        println!("{}: {outcome}", args.pidfile.display());
    }
    Ok(())
}
