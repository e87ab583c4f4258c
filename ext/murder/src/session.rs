//! `Murder::NativeSession`: a seeding or downloading session on its own
//! native threads. `Murder::Seeder` and `Murder::Download` (lib/) wrap it.
//! The runner is shared (`Arc`): no lock is held while a method waits, so
//! `stats` and `stop` from another Ruby thread return at once while one
//! thread waits in `wait`, and `stop` ends that wait too.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RModule, Ruby};
use murder_core::reuse::{ReuseConfig, ReuseMode};
use murder_core::secure::SwarmSecret;
use murder_core::session::{Reporter, Role, SessionConfig, SessionRunner, State};
use murder_core::{Error as CoreError, Progress};

use crate::{errors::to_ruby, nogvl, torrent::Torrent};

#[magnus::wrap(class = "Murder::NativeSession", free_immediately, size)]
pub struct NativeSession {
    runner: Mutex<Option<Arc<SessionRunner>>>,
    /// Rates between reports (a short lock, never held while waiting).
    reporter: Mutex<Reporter>,
}

pub fn define(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let class = module.define_class("NativeSession", ruby.class_object())?;
    class.define_singleton_method("start", function!(start, 15))?;
    class.define_method("port", method!(NativeSession::port, 0))?;
    class.define_method("stats_json", method!(NativeSession::stats_json, 0))?;
    class.define_method("progress_json", method!(NativeSession::progress_json, 0))?;
    class.define_method("summary_json", method!(NativeSession::summary_json, 1))?;
    class.define_method("wait", method!(NativeSession::wait, 1))?;
    class.define_method("stop", method!(NativeSession::stop, 0))?;
    class.define_method("running?", method!(NativeSession::is_running, 0))?;
    class.define_method("failure", method!(NativeSession::failure, 0))?;
    Ok(())
}

fn invalid(ruby: &Ruby, message: String) -> Error {
    to_ruby(ruby, CoreError::InvalidArgument(message))
}

fn ip(ruby: &Ruby, text: &str, what: &str) -> Result<IpAddr, Error> {
    text.parse()
        .map_err(|_| invalid(ruby, format!("{what} {text:?}: not an IP address")))
}

#[allow(clippy::too_many_arguments)]
fn start(
    ruby: &Ruby,
    torrent: &Torrent,
    seed: bool,
    path: PathBuf,
    bind: String,
    port: u16,
    announce_ip: Option<String>,
    max_peers: Option<usize>,
    upload_limit: Option<u64>,
    download_limit: Option<u64>,
    peers: Vec<String>,
    reuse: Vec<PathBuf>,
    reuse_copy: bool,
    lazy_check: bool,
    secret: Option<String>,
    announce_to: Vec<String>,
) -> Result<NativeSession, Error> {
    let secret = secret
        .map(|s| SwarmSecret::from_hex(&s))
        .transpose()
        .map_err(|e| to_ruby(ruby, e))?;
    let peers = peers
        .iter()
        .map(|p| {
            p.parse::<SocketAddr>()
                .map_err(|_| invalid(ruby, format!("peer {p:?}: expected IP:PORT")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Checked by the engine (SessionConfig::validate), as for the CLI.
    let config = SessionConfig {
        listen: SocketAddr::new(ip(ruby, &bind, "bind")?, port),
        announce_ip: announce_ip.map(|a| ip(ruby, &a, "ip")).transpose()?,
        max_peers: max_peers.unwrap_or(murder_core::session::DEFAULT_MAX_PEERS),
        upload_limit,
        download_limit,
        peers,
        reuse: ReuseConfig {
            dirs: reuse,
            mode: if reuse_copy {
                ReuseMode::Copy
            } else {
                ReuseMode::Link
            },
        },
        lazy_check,
        secret,
        announce_to,
        ..SessionConfig::default()
    };
    let role = if seed {
        Role::Seed { data: path }
    } else {
        Role::Download { dest: path }
    };
    let meta = torrent.metainfo_arc();
    // An interrupt cancels the check of the data through this.
    let progress = Arc::new(Progress::new());
    let checking = progress.clone();
    let runner = nogvl::run(
        ruby,
        &progress,
        move || SessionRunner::start_with(meta, role, config, checking),
        || Ok(()),
    )?
    .map_err(|e| to_ruby(ruby, e))?;
    Ok(NativeSession {
        runner: Mutex::new(Some(Arc::new(runner))),
        reporter: Mutex::new(Reporter::new()),
    })
}

impl NativeSession {
    /// The runner, without holding the lock afterwards.
    fn runner(&self, ruby: &Ruby) -> Result<Arc<SessionRunner>, Error> {
        let guard = self.runner.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .clone()
            .ok_or_else(|| to_ruby(ruby, CoreError::Cancelled))
    }

    fn port(ruby: &Ruby, rb_self: &Self) -> Result<u16, Error> {
        Ok(rb_self.runner(ruby)?.local_addr().port())
    }

    /// Started, not stopped, and not failed (a failed session is ended).
    fn is_running(&self) -> bool {
        self.runner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|runner| !matches!(runner.state(), State::Failed(_)))
    }

    /// Why the session failed, if it did (and is not stopped).
    fn failure(&self) -> Option<String> {
        match self
            .runner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|runner| runner.state())
        {
            Some(State::Failed(reason)) => Some(reason),
            _ => None,
        }
    }

    fn stats_json(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        let stats = rb_self.runner(ruby)?.stats();
        serde_json::to_string(&stats).map_err(|e| to_ruby(ruby, CoreError::Internal(e.to_string())))
    }

    /// The engine's progress report (murder_core::session::Report), JSON.
    fn progress_json(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        let stats = rb_self.runner(ruby)?.stats();
        let report = rb_self
            .reporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .progress(&stats);
        Ok(report.to_json())
    }

    /// The engine's summary of a finished download, JSON.
    fn summary_json(ruby: &Ruby, rb_self: &Self, path: PathBuf) -> Result<String, Error> {
        let stats = rb_self.runner(ruby)?.stats();
        let report = rb_self
            .reporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary(&stats, &path);
        Ok(report.to_json())
    }

    /// Waits (without the GVL) up to `seconds` while downloading; returns
    /// "downloading", "complete", "stopped" or "failed: REASON".
    fn wait(ruby: &Ruby, rb_self: &Self, seconds: f64) -> Result<String, Error> {
        // NaN survives `clamp` and would panic `from_secs_f64`: read it as 0.
        let seconds = if seconds.is_nan() { 0.0 } else { seconds };
        let timeout = Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        let runner = rb_self.runner(ruby)?;
        let progress = Progress::new();
        let state = nogvl::run(
            ruby,
            &progress,
            || runner.wait_done_unless(timeout, &progress),
            || Ok(()),
        )?;
        Ok(match state {
            _ if runner.is_stopped() => "stopped".into(),
            State::Downloading => "downloading".into(),
            State::Complete => "complete".into(),
            State::Failed(reason) => format!("failed: {reason}"),
        })
    }

    /// Announces `stopped` and closes every connection; returns once the
    /// session's threads have ended. Idempotent.
    fn stop(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let runner = rb_self
            .runner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(runner) = runner {
            runner.request_stop(); // a `wait` in another thread returns now
            let progress = Progress::new();
            nogvl::run(ruby, &progress, move || runner.stop(), || Ok(()))?;
        }
        Ok(())
    }
}
