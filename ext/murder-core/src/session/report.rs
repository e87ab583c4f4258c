//! What a session reports, in one shape for every front end: the `murder`
//! command prints it (as JSON lines with `--progress json`), Ruby returns
//! it, and the Capistrano tasks read it.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Stats;

/// Seconds spent in each phase of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Checking what is on disk already (resumed or reused pieces).
    pub check: f64,
    /// From serving to the last piece verified.
    pub swarm: f64,
    /// Syncing the data and moving it to its destination.
    pub place: f64,
    /// Staged, waiting for the order to place it (`murder peer
    /// --wait-to-place`: a deploy places every host's release only once
    /// all of them staged it). Not work of this host: the slowest host is
    /// the one whose other phases took longest.
    #[serde(default)]
    pub wait: f64,
}

/// One report line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    /// About once a second while a session runs.
    Progress {
        bytes_done: u64,
        bytes_total: u64,
        /// Bytes that were on this host already (not downloaded).
        reused_bytes: u64,
        downloaded: u64,
        uploaded: u64,
        download_rate: f64,
        upload_rate: f64,
        peers: usize,
        seconds: f64,
    },
    /// The download is complete and at `path`.
    Complete {
        path: String,
        bytes: u64,
        reused_bytes: u64,
        downloaded: u64,
        uploaded: u64,
        seconds: f64,
        /// Bytes of the release per second of the whole run.
        rate: f64,
        peers: usize,
        phases: Phases,
        /// Connections closed because the peer broke the protocol.
        protocol_errors: u64,
        /// CPU seconds (user and system, every thread) the process spent,
        /// when the front end owns its process: `murder peer` does; a
        /// session inside Ruby shares the caller's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cpu_seconds: Option<f64>,
    },
    /// Verified and synced in its staging area at `path`, waiting to be
    /// placed (`murder peer --wait-to-place`).
    Staged {
        path: String,
    },
    Failed {
        error: String,
    },
    /// A seed stopped.
    Stopped {
        uploaded: u64,
    },
}

/// Turns snapshots of a session's counters into reports (rates from the
/// difference between two snapshots).
pub struct Reporter {
    started: Instant,
    last: Option<(Instant, Stats)>,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter::new()
    }
}

impl Reporter {
    pub fn new() -> Reporter {
        Reporter {
            started: Instant::now(),
            last: None,
        }
    }

    pub fn progress(&mut self, stats: &Stats) -> Report {
        let now = Instant::now();
        let (download_rate, upload_rate) = match &self.last {
            Some((at, prev)) => {
                let secs = (now - *at).as_secs_f64().max(1e-3);
                (
                    stats.downloaded.saturating_sub(prev.downloaded) as f64 / secs,
                    stats.uploaded.saturating_sub(prev.uploaded) as f64 / secs,
                )
            }
            None => (0.0, 0.0),
        };
        self.last = Some((now, stats.clone()));
        Report::Progress {
            bytes_done: stats.have_bytes,
            bytes_total: stats.total_bytes,
            reused_bytes: stats.reused_bytes,
            downloaded: stats.downloaded,
            uploaded: stats.uploaded,
            download_rate: download_rate.round(),
            upload_rate: upload_rate.round(),
            peers: stats.peers,
            seconds: round3(self.started.elapsed().as_secs_f64()),
        }
    }

    pub fn summary(&self, stats: &Stats, path: &Path) -> Report {
        let seconds = self.started.elapsed().as_secs_f64();
        Report::Complete {
            path: path.display().to_string(),
            bytes: stats.total_bytes,
            reused_bytes: stats.reused_bytes,
            downloaded: stats.downloaded,
            uploaded: stats.uploaded,
            seconds: round3(seconds),
            rate: (stats.total_bytes as f64 / seconds.max(1e-3)).round(),
            peers: stats.peers,
            phases: Phases {
                check: round3(stats.phases.check),
                swarm: round3(stats.phases.swarm),
                place: round3(stats.phases.place),
                wait: round3(stats.phases.wait),
            },
            protocol_errors: stats.protocol_errors,
            cpu_seconds: None,
        }
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"event\":\"failed\",\"error\":\"{e}\"}}"))
    }
}
