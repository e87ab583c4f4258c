//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test file uses some of them

use std::path::Path;
use std::sync::Arc;

use murder_core::session::SessionConfig;
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
