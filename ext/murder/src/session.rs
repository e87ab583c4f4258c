//! `Murder::NativeSession`: a seeding or downloading session on its own
//! native threads. `Murder::Seeder` and `Murder::Download` (lib/) wrap it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RModule, Ruby};
use murder_core::session::{Role, SessionConfig, SessionRunner, State};
use murder_core::{Error as CoreError, Progress};

use crate::{errors::to_ruby, nogvl, torrent::Torrent};

#[magnus::wrap(class = "Murder::NativeSession", free_immediately, size)]
pub struct NativeSession(Mutex<Option<SessionRunner>>);

pub fn define(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let class = module.define_class("NativeSession", ruby.class_object())?;
    class.define_singleton_method("start", function!(start, 10))?;
    class.define_method("port", method!(NativeSession::port, 0))?;
    class.define_method("stats_json", method!(NativeSession::stats_json, 0))?;
    class.define_method("wait", method!(NativeSession::wait, 1))?;
    class.define_method("stop", method!(NativeSession::stop, 0))?;
    class.define_method("running?", method!(NativeSession::is_running, 0))?;
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
) -> Result<NativeSession, Error> {
    let peers = peers
        .iter()
        .map(|p| {
            p.parse::<SocketAddr>()
                .map_err(|_| invalid(ruby, format!("peer {p:?}: expected IP:PORT")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = SessionConfig {
        listen: SocketAddr::new(ip(ruby, &bind, "bind")?, port),
        announce_ip: announce_ip.map(|a| ip(ruby, &a, "ip")).transpose()?,
        max_peers: max_peers
            .unwrap_or(murder_core::session::DEFAULT_MAX_PEERS)
            .max(1),
        upload_limit,
        download_limit,
        peers,
        ..SessionConfig::default()
    };
    let role = if seed {
        Role::Seed { data: path }
    } else {
        Role::Download { dest: path }
    };
    let meta = std::sync::Arc::new(torrent.metainfo().clone());
    let progress = Progress::new();
    let runner = nogvl::run(
        ruby,
        &progress,
        || SessionRunner::start(meta, role, config),
        || Ok(()),
    )?
    .map_err(|e| to_ruby(ruby, e))?;
    Ok(NativeSession(Mutex::new(Some(runner))))
}

impl NativeSession {
    fn with<T>(&self, ruby: &Ruby, f: impl FnOnce(&SessionRunner) -> T) -> Result<T, Error> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(runner) => Ok(f(runner)),
            None => Err(invalid(ruby, "the session is stopped".into())),
        }
    }

    fn port(ruby: &Ruby, rb_self: &Self) -> Result<u16, Error> {
        rb_self.with(ruby, |r| r.local_addr().port())
    }

    fn is_running(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn stats_json(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        let stats = rb_self.with(ruby, |r| r.stats())?;
        serde_json::to_string(&stats).map_err(|e| to_ruby(ruby, CoreError::Internal(e.to_string())))
    }

    /// Waits (without the GVL) up to `seconds` while downloading; returns
    /// "downloading", "complete" or "failed: REASON".
    fn wait(ruby: &Ruby, rb_self: &Self, seconds: f64) -> Result<String, Error> {
        let timeout = Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        let guard = rb_self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(runner) = guard.as_ref() else {
            return Err(invalid(ruby, "the session is stopped".into()));
        };
        let progress = Progress::new();
        let state = nogvl::run(ruby, &progress, || runner.wait_done(timeout), || Ok(()))?;
        Ok(match state {
            State::Downloading => "downloading".into(),
            State::Complete => "complete".into(),
            State::Failed(reason) => format!("failed: {reason}"),
        })
    }

    /// Announces `stopped` and closes every connection. Idempotent.
    fn stop(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let runner = rb_self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut runner) = runner {
            let progress = Progress::new();
            nogvl::run(ruby, &progress, move || runner.stop(), || Ok(()))?;
        }
        Ok(())
    }
}
