//! `murder seed` and `murder peer`: a session of the engine, with progress
//! for people (a bar on a terminal) and for programs (`--progress json`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use murder_core::reuse::{ReuseConfig, ReuseMode};
use murder_core::session::{Report, Reporter, Role, Session, SessionConfig, Stats};
use murder_core::Metainfo;

use crate::daemon::{self, Handoff, Pidfile, Ready};
use murder_core::units::{human_bytes, parse_size};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, nothing otherwise.
    Auto,
    /// One JSON object per second and a final summary line.
    Json,
    /// Only the summary.
    None,
}

#[derive(clap::Args)]
pub struct Common {
    /// Address to announce to the tracker [default: the local address of the route to it].
    #[arg(long)]
    ip: Option<IpAddr>,
    /// TCP port for peers [default: any free port].
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to accept peers on (`::`: every address, IPv6 and IPv4).
    #[arg(long, default_value = "::")]
    bind: IpAddr,
    /// Most peer connections.
    #[arg(long, default_value_t = murder_core::session::DEFAULT_MAX_PEERS)]
    max_peers: usize,
    /// Most bytes per second sent to peers (e.g. 10M).
    #[arg(long, value_parser = parse_size)]
    upload_limit: Option<u64>,
    /// Most bytes per second received from peers (e.g. 10M).
    #[arg(long, value_parser = parse_size)]
    download_limit: Option<u64>,
    /// Progress output.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    progress: ProgressMode,
    /// Write the process id here (removed on exit); `murder stop --pidfile` stops it.
    #[arg(long)]
    pidfile: Option<PathBuf>,
    /// Where a background process writes its log (seed: with --daemon;
    /// peer: the one that lingers) [default: nowhere]. In the foreground,
    /// logs go to stderr.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Serve metrics for Prometheus at http://ADDR/metrics (e.g. 0.0.0.0:9100).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// A closed swarm: the deploy's secret (64 hex digits) in FILE, which
    /// only its owner may read. Peers without it get nothing; the wire is
    /// encrypted.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

/// Binds `--metrics`, then starts the session: a taken metrics port fails
/// at once, not after the data was checked.
async fn start_with_metrics(
    metrics: Option<SocketAddr>,
    meta: Arc<Metainfo>,
    role: Role,
    config: SessionConfig,
) -> Result<(Option<tokio::net::TcpListener>, Session), murder_core::Error> {
    let listener = match metrics {
        Some(addr) => Some(murder_core::metrics::bind(addr).await?),
        None => None,
    };
    Ok((listener, Session::start(meta, role, config).await?))
}

/// Serves the session's metrics on the listener `start_with_metrics` made,
/// until the returned sender is dropped.
fn serve_metrics(
    listener: Option<tokio::net::TcpListener>,
    session: &Session,
    role: &'static str,
) -> Option<tokio::sync::oneshot::Sender<()>> {
    let listener = listener?;
    let handle = session.stats_handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(murder_core::metrics::serve(
        listener,
        move || murder_core::metrics::session(&handle.stats(), role),
        async move {
            let _ = stopped.await;
        },
    ));
    Some(stop)
}

impl Common {
    /// The session's settings, checked by the engine (before any fork, so
    /// a bad setting fails in the foreground).
    fn config(&self) -> Result<SessionConfig, murder_core::Error> {
        let config = SessionConfig {
            listen: SocketAddr::new(self.bind, self.port),
            announce_ip: self.ip,
            max_peers: self.max_peers,
            upload_limit: self.upload_limit,
            download_limit: self.download_limit,
            secret: self
                .secret_file
                .as_deref()
                .map(murder_core::secure::SwarmSecret::load)
                .transpose()?,
            ..SessionConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(clap::Args)]
pub struct SeedArgs {
    /// The .torrent file.
    torrent: PathBuf,
    /// The data: the file, or the directory that holds the torrent's files
    /// (of any name).
    data: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Run in the background (needs --pidfile).
    #[arg(long, requires = "pidfile")]
    daemon: bool,
    /// Show every downloader every piece at once, like a plain BitTorrent
    /// seed, instead of steering each to pieces nobody has yet.
    #[arg(long)]
    no_steer: bool,
}

#[derive(clap::Args)]
pub struct PeerArgs {
    /// The .torrent file, or `-`: a deploy ticket on standard input, as a
    /// deploy tool sends it over SSH: one JSON line
    /// {"torrent":LENGTH,"secret":"64 hex digits"}, then the .torrent's
    /// LENGTH bytes (README: "murder peer - DEST").
    torrent: PathBuf,
    /// Where the data goes: the file, or the directory that will hold the
    /// torrent's files (of any name).
    dest: PathBuf,
    #[command(flatten)]
    common: Common,
    /// Seconds to keep seeding in the background once the download is done
    /// (the command itself exits as soon as the data is complete).
    #[arg(long, default_value_t = 30)]
    linger: u64,
    /// Look for content this host holds already under DIR (repeatable):
    /// files of earlier releases, matched by content and verified against
    /// the torrent (the file's BEP 47 sha1, else piece by piece) before
    /// they count.
    #[arg(long, value_name = "DIR")]
    reuse: Vec<PathBuf>,
    /// How reused files land in the new release: hard links to the earlier
    /// release's files when on the same file system (link; nothing is ever
    /// written to them), or copies (copy) for applications that change
    /// release files in place.
    #[arg(long, value_enum, default_value_t = ReuseArg::Link)]
    reuse_mode: ReuseArg,
    /// Once the download is verified and synced, stage it beside DEST,
    /// print a `staged` report and wait for a line on standard input:
    /// `place` renames it to DEST, anything else (or the end of the input)
    /// leaves it staged, for a later run to reuse. A deploy places its
    /// release on every host only once all of them hold it.
    #[arg(long)]
    wait_to_place: bool,
    /// With a deploy ticket (`-`): keep its torrent in FILE, and decode the
    /// next ticket as a difference from it (a few KB, where a tree's whole
    /// torrent is hundreds).
    #[arg(long, value_name = "FILE")]
    ticket_base: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReuseArg {
    Link,
    Copy,
}

/// Runs a session's work to its end, then gives blocking work left behind
/// (a host-name lookup cannot be cancelled) one second: a stop must not wait
/// out the resolver.
fn run_session<F: std::future::Future>(work: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let output = runtime.block_on(work);
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(output)
}

pub fn seed(args: SeedArgs) -> Result<(), Box<dyn std::error::Error>> {
    if args.common.log.is_some() && !args.daemon {
        // It would name a file nothing is ever written to.
        return Err("--log names a background seed's log: use it with --daemon (in the foreground, logs go to stderr)".into());
    }
    let meta = Arc::new(Metainfo::load(&args.torrent)?);
    let config = SessionConfig {
        steer: !args.no_steer,
        ..args.common.config()?
    };
    let mut ready = if args.daemon {
        daemon::detach(args.common.log.as_deref())?
    } else {
        Ready::foreground()
    };
    let pidfile = args
        .common
        .pidfile
        .as_deref()
        .map(Pidfile::write)
        .transpose();
    let _pidfile = ready.failing(pidfile)?;
    let role = Role::Seed {
        data: args.data.clone(),
    };
    run_session(async move {
        let started = start_with_metrics(args.common.metrics, meta.clone(), role, config).await;
        let (metrics, session) = match started {
            Ok(started) => started,
            Err(e) => {
                ready.fail(&e.to_string());
                return Err(e.into());
            }
        };
        let _metrics = serve_metrics(metrics, &session, "seed");
        ready.report(&format!(
            "seeding {} ({}) on port {}",
            meta.name,
            meta.info_hash_hex(),
            session.local_addr().port()
        ));
        let mut display = Display::new(args.common.progress, &meta, !args.daemon);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = crate::signals::terminated();
        tokio::pin!(stop);
        // A seed fails when its data no longer matches or cannot be read
        // (rule W1): then it ends, non-zero, rather than serve nothing.
        let failed = murder_core::session::failure(session.state());
        tokio::pin!(failed);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                reason = &mut failed => {
                    display.failed(&reason);
                    session.shutdown().await;
                    return Err(reason.into());
                }
                _ = tick.tick() => display.update(&session.stats()),
            }
        }
        display.finish(&session.stats(), "seeded");
        session.shutdown().await;
        Ok(())
    })?
}

pub fn peer(args: PeerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let from_ticket = args.torrent.as_os_str() == "-";
    if args.ticket_base.is_some() && !from_ticket {
        return Err(
            "--ticket-base keeps a deploy ticket's torrent: it needs `-` in place of a .torrent"
                .into(),
        );
    }
    let (meta, ticket_secret) = if from_ticket {
        let ticket = crate::ticket::read(args.ticket_base.as_deref())?;
        (ticket.torrent, ticket.secret)
    } else {
        (Metainfo::load(&args.torrent)?, None)
    };
    let meta = Arc::new(meta);
    let common = args.common.config()?;
    let config = SessionConfig {
        secret: ticket_secret.or(common.secret.clone()),
        reuse: ReuseConfig {
            dirs: args.reuse.clone(),
            mode: match args.reuse_mode {
                ReuseArg::Link => ReuseMode::Link,
                ReuseArg::Copy => ReuseMode::Copy,
            },
        },
        place: !args.wait_to_place,
        ..common
    };
    // Fork before any thread exists; the child downloads and lingers.
    let handoff = if args.linger > 0 {
        daemon::fork_until_done()?
    } else {
        Handoff::none()
    };
    let _pidfile = args
        .common
        .pidfile
        .as_deref()
        .map(Pidfile::write)
        .transpose()?;
    let role = Role::Download {
        dest: args.dest.clone(),
    };
    run_session(async move {
        let mut display = Display::new(args.common.progress, &meta, true);
        let started = start_with_metrics(args.common.metrics, meta.clone(), role, config).await;
        let (metrics, session) = match started {
            Ok(started) => started,
            Err(e) => {
                display.failed(&e.to_string());
                return Err(e.into());
            }
        };
        let _metrics = serve_metrics(metrics, &session, "download");
        // With --wait-to-place the deployer speaks on stdin: "abort" while
        // we download (its seed failed, say: no need to wait for a stall),
        // then the order once staged.
        let mut orders = args.wait_to_place.then(deployer_orders).transpose()?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = crate::signals::terminated();
        tokio::pin!(stop);
        let done = murder_core::session::completion(session.state());
        tokio::pin!(done);
        // An order to place that came before the release was staged.
        let mut early = None;
        loop {
            tokio::select! {
                // A download that is complete goes on to its order even
                // when an abort is waiting: the order decides then.
                biased;
                _ = &mut stop => {
                    display.clear();
                    session.shutdown().await;
                    return Err("interrupted; verified pieces are kept for the next run".into());
                }
                result = &mut done => {
                    if let Err(e) = result {
                        display.failed(&e.to_string());
                        session.shutdown().await;
                        return Err(e.into());
                    }
                    break;
                }
                order = next_order(&mut orders) => {
                    match order.as_deref().map(str::trim) {
                        Some("abort") => {
                            display.failed("aborted by the deployer");
                            session.shutdown().await;
                            return Err("aborted by the deployer; verified pieces are kept for the next run".into());
                        }
                        // The end of stdin: the deployer is gone, and the
                        // release will not be placed; it stays staged, for
                        // the next run.
                        None => orders = None,
                        // An early order: the first decides once staged
                        // (an abort after it still ends the download).
                        Some(_) => {
                            early = early.or(order);
                        }
                    }
                }
                _ = tick.tick() => display.update(&session.stats()),
            }
        }
        if args.wait_to_place {
            // DEST held this release already (a deploy run again): it is
            // "staged" where it lies, and the order has nothing to rename.
            let in_place = session.found_in_place();
            let staged = if in_place {
                args.dest.clone()
            } else {
                murder_core::storage::staging_path(&args.dest)
            };
            display.staged(&staged);
            let decision = tokio::select! {
                _ = &mut stop => {
                    session.shutdown().await;
                    return Err(format!(
                        "interrupted while waiting to place: the verified release stays staged at {}",
                        staged.display()
                    )
                    .into());
                }
                // No line (stdin ended, perhaps while we downloaded): no order.
                decision = async {
                    match (early, orders.as_mut()) {
                        (Some(order), _) => Some(order),
                        (None, Some(orders)) => orders.recv().await,
                        (None, None) => None,
                    }
                } => decision,
            };
            if decision.map(|line| line.trim() == "place") != Some(true) {
                session.shutdown().await;
                let why = if in_place {
                    "it was there before this run, and stays"
                } else {
                    "the verified release stays staged"
                };
                return Err(format!("not placed: {why} at {}", staged.display()).into());
            }
            let placed = if in_place {
                Ok(())
            } else {
                session.place().await.map(drop)
            };
            if let Err(e) = placed {
                display.failed(&e.to_string());
                session.shutdown().await;
                return Err(e.into());
            }
        }
        let stats = session.stats();
        display.summary(&stats, &args.dest);
        handoff.release(args.common.log.as_deref());
        // Keep serving the swarm a while: the last hosts finish from us too.
        tokio::select! {
            _ = &mut stop => {}
            _ = tokio::time::sleep(Duration::from_secs(args.linger)) => {}
        }
        session.shutdown().await;
        Ok(())
    })?
}

/// The deployer's lines on stdin, read on a thread of their own, not the
/// runtime's blocking pool (whose threads the runtime waits for at exit: a
/// read of stdin may never end). The channel closes at the end of stdin.
fn deployer_orders() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<String>> {
    let (send, orders) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("murder-orders".into())
        .spawn(move || loop {
            let mut line = String::new();
            match std::io::stdin().read_line(&mut line) {
                Ok(n) if n > 0 && send.send(line).is_ok() => {}
                _ => return,
            }
        })?;
    Ok(orders)
}

/// The deployer's next line; `None` at the end of stdin, and never when
/// there is no deployer (or it is gone).
async fn next_order(
    orders: &mut Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
) -> Option<String> {
    match orders {
        Some(orders) => orders.recv().await,
        None => std::future::pending().await,
    }
}

/// Progress output, by mode: a bar for people, the engine's reports as
/// JSON lines for programs.
struct Display {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    reporter: Reporter,
}

impl Display {
    fn new(mode: ProgressMode, meta: &Metainfo, interactive: bool) -> Display {
        let bar = (mode == ProgressMode::Auto && interactive).then(|| {
            // Data bytes, as `have_bytes` counts them (pad files are no one's).
            let bar = ProgressBar::new(meta.data_length());
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Display {
            mode,
            bar,
            reporter: Reporter::new(),
        }
    }

    fn update(&mut self, stats: &Stats) {
        let report = self.reporter.progress(stats);
        match self.mode {
            ProgressMode::Json => crate::print_line(&report.to_json()),
            ProgressMode::Auto => {
                if let (Some(bar), Report::Progress { upload_rate, .. }) = (&self.bar, &report) {
                    bar.set_position(stats.have_bytes);
                    bar.set_message(format!(
                        "{} peers, up {}/s",
                        stats.peers,
                        human_bytes(*upload_rate as u64)
                    ));
                }
            }
            ProgressMode::None => {}
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn failed(&self, error: &str) {
        self.clear();
        if self.mode == ProgressMode::Json {
            let report = Report::Failed {
                error: error.to_string(),
            };
            crate::print_line(&report.to_json());
        }
    }

    fn staged(&self, staging: &std::path::Path) {
        if self.mode == ProgressMode::Json {
            let report = Report::Staged {
                path: staging.display().to_string(),
            };
            crate::print_line(&report.to_json());
        }
    }

    fn summary(&self, stats: &Stats, dest: &std::path::Path) {
        self.clear();
        let mut report = self.reporter.summary(stats, dest);
        if let Report::Complete { cpu_seconds, .. } = &mut report {
            *cpu_seconds = crate::cpu_seconds();
        }
        match (&self.mode, &report) {
            (ProgressMode::Json, _) => crate::print_line(&report.to_json()),
            (
                _,
                Report::Complete {
                    seconds,
                    rate,
                    phases,
                    cpu_seconds,
                    ..
                },
            ) => crate::print_line(&format!(
                "{}: {} in {seconds:.2} s ({}/s; check {:.2} s, swarm {:.2} s, wait {:.2} s, \
                 place {:.2} s), {} reused, {} peers, uploaded {}{}",
                dest.display(),
                human_bytes(stats.total_bytes),
                human_bytes(*rate as u64),
                phases.check,
                phases.swarm,
                phases.wait,
                phases.place,
                human_bytes(stats.reused_bytes),
                stats.peers,
                human_bytes(stats.uploaded),
                cpu_seconds.map_or(String::new(), |c| format!(", {c:.2} CPU s"))
            )),
            _ => {}
        }
    }

    fn finish(&self, stats: &Stats, what: &str) {
        self.clear();
        if self.mode == ProgressMode::Json {
            let report = Report::Stopped {
                uploaded: stats.uploaded,
            };
            crate::print_line(&report.to_json());
        } else if self.bar.is_some() {
            crate::print_line(&format!("{what}: uploaded {}", human_bytes(stats.uploaded)));
        }
    }
}
