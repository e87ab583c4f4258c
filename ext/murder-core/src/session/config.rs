//! A session's settings, validated once here for every front end (the
//! `murder` command and Ruby pass theirs through `validate`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::reuse::ReuseConfig;
use crate::secure::SwarmSecret;

/// Connections per session unless configured. Murder allowed 64; fewer,
/// faster connections pass a fresh piece on sooner (a piece crosses a
/// connection at its share of the link) and cost less per piece in HAVE
/// messages, and 16 still reach a thousand hosts in three hops. Measured on
/// the farm at 32 hosts: 1.20-1.23 x T* against 1.31-1.38 with 64.
pub const DEFAULT_MAX_PEERS: usize = 16;
/// The most connections a session may be given.
pub const MAX_PEERS_LIMIT: usize = 10_000;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Where to accept peers (port 0: any free port).
    pub listen: SocketAddr,
    /// The address announced to the tracker; `None`: the local address of
    /// the route to the tracker.
    pub announce_ip: Option<IpAddr>,
    /// Most connections (default `DEFAULT_MAX_PEERS`), at most half of
    /// them dialled by us.
    pub max_peers: usize,
    /// Peers asked of the tracker per announce.
    pub numwant: usize,
    /// Most blocks kept requested from one peer.
    pub pipeline: usize,
    /// Without data this long, a peer's requests go to others.
    pub snub_timeout: Duration,
    /// Overrides the tracker's re-announce interval.
    pub announce_interval: Option<Duration>,
    /// Peers to connect to besides those from the tracker.
    pub peers: Vec<SocketAddr>,
    /// Announce to the torrent's tracker.
    pub use_tracker: bool,
    /// Trackers to announce to in place of the torrent's (`HOST:PORT` or
    /// an http:// URL; empty: the torrent's). A deployer seeding through a
    /// relay announces to its own tracker on loopback, while the torrent
    /// names the relay, which the servers reach.
    pub announce_to: Vec<String>,
    /// Most bytes per second sent to all peers together.
    pub upload_limit: Option<u64>,
    /// Most bytes per second received from all peers together.
    pub download_limit: Option<u64>,
    /// A seed steers downloaders: it shows each only a few pieces at a time,
    /// always those sent least so far, so every piece leaves it once before
    /// any leaves twice (like BEP 16 super-seeding; standard clients follow).
    pub steer: bool,
    /// Reserve the space of a download before it starts, so that a release
    /// that does not fit fails at once rather than midway.
    pub preallocate: bool,
    /// A download fails when, this long, it made no progress, pieces it
    /// lacks are held by no connected peer, and no seed is connected (the
    /// seeder left before the swarm had every piece).
    pub orphan_timeout: Duration,
    /// A download fails when it received nothing for this long (no peer
    /// sends, or none can be reached): a deploy never hangs on one host.
    pub stall_timeout: Duration,
    /// A download that no tracker ever answered, and that never had a peer
    /// connected, fails after this long: a host that cannot reach the
    /// tracker (a firewall, the wrong address) says so without waiting out
    /// the stall timeout.
    pub tracker_timeout: Duration,
    /// Content on this host to bring into a download before fetching
    /// anything (files of earlier releases).
    pub reuse: ReuseConfig,
    /// A seed of data a torrent was just made from: do not check all of it
    /// before serving; check each piece the first time it is sent (a piece
    /// that no longer matches fails the seed: the data changed).
    pub lazy_check: bool,
    /// Rename a finished download into place at once. When false, it is
    /// only staged (verified and synced beside its destination) and
    /// `Session::place` renames it.
    pub place: bool,
    /// A closed swarm (see `crate::secure`): peers must hold this secret
    /// before any data flows, the wire is encrypted, and announces carry
    /// the tracker token derived from it. `None`: plain BitTorrent.
    pub secret: Option<SwarmSecret>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            listen: SocketAddr::new(crate::listen::EVERY_ADDRESS, 0),
            announce_ip: None,
            max_peers: DEFAULT_MAX_PEERS,
            numwant: 50,
            pipeline: 128,
            snub_timeout: Duration::from_secs(5),
            announce_interval: None,
            peers: Vec::new(),
            use_tracker: true,
            announce_to: Vec::new(),
            upload_limit: None,
            download_limit: None,
            steer: true,
            preallocate: true,
            orphan_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            // Four announces at least (2 s connect timeout, 2 s apart).
            tracker_timeout: Duration::from_secs(15),
            reuse: ReuseConfig::default(),
            lazy_check: false,
            place: true,
            secret: None,
        }
    }
}

impl SessionConfig {
    /// Refuses settings that cannot work, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if self.max_peers == 0 || self.max_peers > MAX_PEERS_LIMIT {
            return bad(format!(
                "max peers {}: must be from 1 to {MAX_PEERS_LIMIT} (a session with no connections talks to nobody)",
                self.max_peers
            ));
        }
        if self.numwant == 0 || self.numwant > 500 {
            return bad(format!("numwant {}: must be from 1 to 500", self.numwant));
        }
        if self.pipeline == 0 {
            return bad("pipeline 0: at least one request must be in flight".into());
        }
        for (name, limit) in [
            ("upload limit", self.upload_limit),
            ("download limit", self.download_limit),
        ] {
            if limit == Some(0) {
                return bad(format!(
                    "{name} 0: give a rate in bytes per second, or none for no limit"
                ));
            }
        }
        if self.snub_timeout.is_zero()
            || self.orphan_timeout.is_zero()
            || self.stall_timeout.is_zero()
            || self.tracker_timeout.is_zero()
        {
            return bad("timeouts must be longer than zero".into());
        }
        if self
            .announce_interval
            .is_some_and(|i| i < Duration::from_secs(1))
        {
            return bad("announce interval: at least 1 s".into());
        }
        for tracker in &self.announce_to {
            crate::create::announce_url(tracker)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused_by_name() {
        assert!(SessionConfig::default().validate().is_ok());
        let refused = |c: SessionConfig| c.validate().unwrap_err().to_string();
        assert!(refused(SessionConfig {
            max_peers: 0,
            ..Default::default()
        })
        .contains("max peers 0"));
        assert!(refused(SessionConfig {
            upload_limit: Some(0),
            ..Default::default()
        })
        .contains("upload limit 0"));
        assert!(refused(SessionConfig {
            download_limit: Some(0),
            ..Default::default()
        })
        .contains("download limit 0"));
        assert!(refused(SessionConfig {
            pipeline: 0,
            ..Default::default()
        })
        .contains("pipeline"));
        assert!(refused(SessionConfig {
            announce_to: vec!["127.0.0.1:8998".into(), "nowhere".into()],
            ..Default::default()
        })
        .contains("tracker \"nowhere\""));
    }
}
