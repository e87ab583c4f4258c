//! `Murder::TrackerServer`: a tracker serving from its own native thread
//! (no GVL held). `Murder::Tracker` in lib/murder/tracker.rb wraps it.

use murder_core::secure::SwarmSecret;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use magnus::{function, method, prelude::*, Error, RModule, Ruby};
use murder_core::tracker::{TrackerConfig, TrackerServer as Server};
use murder_core::{Error as CoreError, Progress};

use crate::{errors::to_ruby, nogvl, torrent::Torrent};

/// Whether an allow-list entry names an info-hash (the core's rule).
fn names_info_hash(spec: String) -> bool {
    murder_core::tracker::names_info_hash(&spec)
}

#[magnus::wrap(class = "Murder::TrackerServer", free_immediately, size)]
pub struct TrackerServer(Mutex<Option<Server>>);

pub fn define(ruby: &Ruby, module: RModule) -> Result<(), Error> {
    let class = module.define_class("TrackerServer", ruby.class_object())?;
    class.define_singleton_method("start", function!(start, 8))?;
    class.define_singleton_method("names_info_hash?", function!(names_info_hash, 1))?;
    class.define_method("port", method!(TrackerServer::port, 0))?;
    class.define_method("running?", method!(TrackerServer::is_running, 0))?;
    class.define_method("allow", method!(TrackerServer::allow, 1))?;
    class.define_method("allow_torrent", method!(TrackerServer::allow_torrent, 1))?;
    class.define_method("allow_closed", method!(TrackerServer::allow_closed, 2))?;
    class.define_method("stats_json", method!(TrackerServer::stats_json, 0))?;
    class.define_method("stop", method!(TrackerServer::stop, 0))?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn start(
    ruby: &Ruby,
    bind: String,
    port: u16,
    interval: u64,
    peer_timeout: Option<u64>,
    numwant: usize,
    max_peers_per_address: usize,
    allow_dir: Option<PathBuf>,
    operator_token: Option<String>,
) -> Result<TrackerServer, Error> {
    let ip: IpAddr = bind.parse().map_err(|_| {
        to_ruby(
            ruby,
            CoreError::InvalidArgument(format!("bind {bind:?}: not an IP address")),
        )
    })?;
    // Checked by the engine (TrackerConfig::validate), as for the CLI.
    let config = TrackerConfig {
        interval: Duration::from_secs(interval),
        peer_timeout: peer_timeout.map(Duration::from_secs),
        default_numwant: numwant,
        max_peers_per_address,
        allow_dir,
        operator_token,
        ..TrackerConfig::default()
    };
    // Reading the allow directory (each torrent parsed and hashed) may
    // take a while: other Ruby threads run meanwhile. Interrupted, the
    // server started is dropped, which stops it.
    let progress = Progress::new();
    let server = nogvl::run(
        ruby,
        &progress,
        move || Server::start(SocketAddr::new(ip, port), config),
        || Ok(()),
    )?
    .map_err(|e| to_ruby(ruby, e))?;
    Ok(TrackerServer(Mutex::new(Some(server))))
}

impl TrackerServer {
    fn with<T>(&self, ruby: &Ruby, f: impl FnOnce(&Server) -> T) -> Result<T, Error> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(server) => Ok(f(server)),
            None => Err(to_ruby(
                ruby,
                CoreError::InvalidArgument("the tracker is stopped".into()),
            )),
        }
    }

    fn port(ruby: &Ruby, rb_self: &Self) -> Result<u16, Error> {
        rb_self.with(ruby, |s| s.local_addr().port())
    }

    fn is_running(&self) -> bool {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(Server::is_running)
    }

    /// Allows a .torrent path or a hex info-hash; returns the hex info-hash.
    fn allow(ruby: &Ruby, rb_self: &Self, spec: String) -> Result<String, Error> {
        rb_self
            .with(ruby, |s| s.tracker().allow(&spec))?
            .map(hex::encode)
            .map_err(|e| to_ruby(ruby, e))
    }

    fn allow_torrent(ruby: &Ruby, rb_self: &Self, torrent: &Torrent) -> Result<String, Error> {
        rb_self.with(ruby, |s| {
            s.tracker().allow_torrent(torrent.metainfo());
            torrent.metainfo().info_hash_hex()
        })
    }

    /// Allows the torrent as a closed swarm of the secret (64 hex digits).
    fn allow_closed(
        ruby: &Ruby,
        rb_self: &Self,
        torrent: &Torrent,
        secret: String,
    ) -> Result<String, Error> {
        let secret = SwarmSecret::from_hex(&secret).map_err(|e| to_ruby(ruby, e))?;
        rb_self.with(ruby, |s| {
            s.tracker().allow_closed(torrent.metainfo(), &secret);
            torrent.metainfo().info_hash_hex()
        })
    }

    fn stats_json(ruby: &Ruby, rb_self: &Self) -> Result<String, Error> {
        let stats = rb_self.with(ruby, |s| s.tracker().stats())?;
        serde_json::to_string(&stats).map_err(|e| to_ruby(ruby, CoreError::Internal(e.to_string())))
    }

    /// Stops serving; returns once the port is closed. Idempotent.
    fn stop(ruby: &Ruby, rb_self: &Self) -> Result<(), Error> {
        let server = rb_self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut server) = server else {
            return Ok(());
        };
        let progress = Progress::new();
        nogvl::run(ruby, &progress, move || server.stop(), || Ok(()))?.map_err(|e| to_ruby(ruby, e))
    }
}

impl Drop for TrackerServer {
    /// A tracker never stopped, freed by the garbage collector: it stops on
    /// a thread of its own, so the collector does not wait for its
    /// connections to drain (Murder::Tracker#stop waits).
    fn drop(&mut self) {
        let server = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(server) = server {
            let _ = std::thread::Builder::new()
                .name("murder-tracker-stop".into())
                .spawn(move || drop(server));
        }
    }
}
