//! Fault 1 of the production issue: the tracker goes away mid-swarm and
//! comes back 5 s later on the same port. Rule checked (announce.rs): a
//! failed announce is retried with a backoff while the connections a peer
//! holds carry on; a peer that joins during the outage gets its peers once
//! the tracker is back.

mod common;
use common::{local, quick_tracker, random_file, torrent};

use std::time::{Duration, Instant};

use murder_core::session::{Role, SessionConfig, SessionRunner, State};

#[test]
fn a_tracker_killed_mid_swarm_and_back_5_s_later_does_not_stop_the_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let mut tracker = quick_tracker("127.0.0.1:0".parse().unwrap());
    let addr = tracker.local_addr();
    let data = dir.path().join("release.tgz");
    random_file(&data, 12_000_000, 9);
    let meta = torrent(&data, &addr.to_string(), 64 * 1024);
    tracker.tracker().allow_torrent(&meta);
    // 1 MB/s each: the downloads outlast the outage.
    let slow = || SessionConfig {
        download_limit: Some(1_000_000),
        ..local()
    };
    let _seed =
        SessionRunner::start(meta.clone(), Role::Seed { data: data.clone() }, local()).unwrap();
    let early: Vec<_> = (0..2)
        .map(|i| {
            SessionRunner::start(
                meta.clone(),
                Role::Download {
                    dest: dir.path().join(format!("early{i}/release.tgz")),
                },
                slow(),
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(early.iter().all(|p| p.stats().peers >= 1));
    tracker.stop().unwrap();
    let outage = Instant::now();
    // A host that joins while the tracker is down.
    let late = SessionRunner::start(
        meta.clone(),
        Role::Download {
            dest: dir.path().join("late/release.tgz"),
        },
        local(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        late.stats().peers,
        0,
        "the late host found peers with no tracker"
    );
    assert!(
        early.iter().all(|p| p.stats().peers >= 1),
        "the early hosts kept their connections"
    );
    let back = quick_tracker(addr);
    back.tracker().allow_torrent(&meta);
    for p in early.iter().chain([&late]) {
        assert_eq!(
            p.wait_done(Duration::from_secs(30)),
            State::Complete,
            "{:?}",
            p.stats()
        );
    }
    for name in ["early0", "early1", "late"] {
        let got = std::fs::read(dir.path().join(name).join("release.tgz")).unwrap();
        assert!(got == std::fs::read(&data).unwrap(), "{name}");
    }
    // The late host waited for the tracker, not for a fixed long backoff.
    assert!(outage.elapsed() < Duration::from_secs(20));
}
