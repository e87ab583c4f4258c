//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses some of them

use std::path::Path;
use std::sync::Arc;

use murder_core::session::SessionConfig;
use murder_core::tracker::{TrackerConfig, TrackerServer};
use murder_core::{create_torrent, CreateOptions, Metainfo, Progress};
use proptest::prelude::ProptestConfig;

/// A file of `len` pseudo-random bytes.
pub fn random_file(path: &Path, len: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    std::fs::write(path, data).unwrap();
}

pub fn torrent(path: &Path, tracker: &str, piece_length: u64) -> Arc<Metainfo> {
    let mut opts = CreateOptions::new(tracker);
    opts.piece_length = Some(piece_length);
    Arc::new(create_torrent(path, &opts, &Progress::new()).unwrap())
}

/// A random file at `path`, its torrent (64 KiB pieces), and a tracker on
/// 127.0.0.1 that allows it and asks for announces every second.
pub fn tracked_release(path: &Path, len: usize, seed: u64) -> (TrackerServer, Arc<Metainfo>) {
    let tracker = quick_tracker("127.0.0.1:0".parse().unwrap());
    random_file(path, len, seed);
    let meta = torrent(path, &tracker.local_addr().to_string(), 64 * 1024);
    tracker.tracker().allow_torrent(&meta);
    (tracker, meta)
}

/// A tracker on `addr` that asks for announces every second.
pub fn quick_tracker(addr: std::net::SocketAddr) -> TrackerServer {
    TrackerServer::start(
        addr,
        TrackerConfig {
            interval: std::time::Duration::from_secs(1),
            ..TrackerConfig::default()
        },
    )
    .unwrap()
}

/// A session on 127.0.0.1 that announces 127.0.0.1.
pub fn local() -> SessionConfig {
    SessionConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        announce_ip: Some("127.0.0.1".parse().unwrap()),
        ..SessionConfig::default()
    }
}

/// 3,000 cases per property in the suite; PROPTEST_CASES sets more for a long run.
pub fn proptest_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

pub mod wire_peer;

/// `mkfifo PATH`: a name that is a stream, not a file.
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    assert_eq!(
        unsafe { libc::mkfifo(name.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

/// A session of `role` that announces to no tracker, with `config`'s other
/// settings.
fn untracked(
    meta: &Arc<Metainfo>,
    role: murder_core::session::Role,
    config: SessionConfig,
) -> murder_core::session::SessionRunner {
    let config = SessionConfig {
        use_tracker: false,
        ..config
    };
    murder_core::session::SessionRunner::start(meta.clone(), role, config).unwrap()
}

/// A seed of `data` that announces to no tracker (its peers are pointed at
/// it), with `config`'s other settings.
pub fn untracked_seed(
    meta: &Arc<Metainfo>,
    data: &Path,
    config: SessionConfig,
) -> murder_core::session::SessionRunner {
    let data = data.to_path_buf();
    untracked(meta, murder_core::session::Role::Seed { data }, config)
}

/// A download of `meta` to `dest` that announces to no tracker and dials
/// only `peers`, with `config`'s other settings.
pub fn untracked_download(
    meta: &Arc<Metainfo>,
    dest: &Path,
    peers: Vec<std::net::SocketAddr>,
    config: SessionConfig,
) -> murder_core::session::SessionRunner {
    let dest = dest.to_path_buf();
    let role = murder_core::session::Role::Download { dest };
    untracked(meta, role, SessionConfig { peers, ..config })
}

/// Waits up to `secs` for `peer` to complete, then checks that `dest`
/// holds exactly the bytes of `data`.
pub fn assert_downloaded(
    peer: &murder_core::session::SessionRunner,
    secs: u64,
    dest: &Path,
    data: &Path,
) {
    assert_eq!(
        peer.wait_done(std::time::Duration::from_secs(secs)),
        murder_core::session::State::Complete,
        "{:?}",
        peer.stats()
    );
    assert_eq!(std::fs::read(dest).unwrap(), std::fs::read(data).unwrap());
}
