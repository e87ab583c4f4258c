//! Seeding and downloading between murder sessions on 127.0.0.1.

mod common;
use common::{assert_downloaded, local, random_file, torrent, untracked_seed};

use std::time::Duration;

use murder_core::session::{Role, SessionConfig, SessionRunner, State};
use murder_core::tracker::{TrackerConfig, TrackerServer};

#[test]
fn a_download_from_a_seed_without_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 3_000_000, 1);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    let seed = untracked_seed(&meta, &data, local());
    let dest = dir.path().join("out/release.tgz");
    let peer = SessionRunner::start(
        meta.clone(),
        Role::Download { dest: dest.clone() },
        SessionConfig {
            use_tracker: false,
            peers: vec![seed.local_addr()],
            ..local()
        },
    )
    .unwrap();
    assert_eq!(peer.wait_done(Duration::from_secs(30)), State::Complete);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&data).unwrap());
    assert!(!dest.with_file_name(".release.tgz.part").exists());
    let stats = peer.stats();
    assert_eq!(stats.pieces_have, meta.piece_count());
    assert!(
        stats.downloaded >= 3_000_000 && stats.downloaded < 3_300_000,
        "{stats:?}"
    );
}

#[test]
fn a_swarm_through_our_tracker_shares_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let tracker =
        TrackerServer::start("127.0.0.1:0".parse().unwrap(), TrackerConfig::default()).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    for i in 0..20 {
        random_file(&data.join(format!("f{i}")), 100_000 + i * 777, i as u64);
    }
    let meta = torrent(&data, &tracker.local_addr().to_string(), 32 * 1024);
    tracker.tracker().allow_torrent(&meta);
    let seed =
        SessionRunner::start(meta.clone(), Role::Seed { data: data.clone() }, local()).unwrap();
    let peers: Vec<_> = (0..4)
        .map(|i| {
            SessionRunner::start(
                meta.clone(),
                Role::Download {
                    dest: dir.path().join(format!("peer{i}/data")),
                },
                local(),
            )
            .unwrap()
        })
        .collect();
    for (i, p) in peers.iter().enumerate() {
        assert_eq!(
            p.wait_done(Duration::from_secs(60)),
            State::Complete,
            "peer {i}: {:?}",
            p.stats()
        );
        for f in 0..20 {
            let name = format!("f{f}");
            assert_eq!(
                std::fs::read(dir.path().join(format!("peer{i}/data/{name}"))).unwrap(),
                std::fs::read(data.join(&name)).unwrap()
            );
        }
    }
    let total = meta.total_length();
    let uploaded_by_seed = seed.stats().uploaded;
    let uploaded_by_peers: u64 = peers.iter().map(|p| p.stats().uploaded).sum();
    // Every byte received was sent by someone; what shows sharing is that
    // the peers sent some of it.
    assert!(
        uploaded_by_peers > 0,
        "the peers shared nothing (seed sent {uploaded_by_seed} of {total})"
    );
    eprintln!("seed sent {uploaded_by_seed} of {total}, peers {uploaded_by_peers}");
}

/// Two seeds have nothing to trade: with peer counts capped, a seed holding
/// another seed's only slot would lock a downloader out for good.
#[test]
fn seeds_let_go_of_each_other_so_a_downloader_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 500_000, 7);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    let one_slot = SessionConfig {
        use_tracker: false,
        max_peers: 1,
        ..local()
    };
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        one_slot.clone(),
    )
    .unwrap();
    let _other_seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        SessionConfig {
            peers: vec![seed.local_addr()],
            ..one_slot.clone()
        },
    )
    .unwrap();
    // Time to meet (they let go as soon as their bitfields cross).
    std::thread::sleep(Duration::from_millis(500));
    let dest = dir.path().join("out/release.tgz");
    let peer = SessionRunner::start(
        meta.clone(),
        Role::Download { dest: dest.clone() },
        SessionConfig {
            peers: vec![seed.local_addr()],
            ..one_slot
        },
    )
    .unwrap();
    assert_downloaded(&peer, 20, &dest, &data);
}

#[test]
fn half_the_slots_stay_open_for_peers_that_join_later() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 200_000, 11);
    let meta = torrent(&data, "127.0.0.1:9", 32 * 1024);
    let downloader = |name: &str, config: SessionConfig| {
        let dest = dir.path().join(name).join("release.tgz");
        SessionRunner::start(meta.clone(), Role::Download { dest }, config).unwrap()
    };
    let quiet = SessionConfig {
        use_tracker: false,
        ..local()
    };
    // Downloaders with nothing to trade keep their connections open.
    let early: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|name| downloader(name, quiet.clone()))
        .collect();
    let two_slots = SessionConfig {
        max_peers: 2,
        peers: early.iter().map(|s| s.local_addr()).collect(),
        ..quiet.clone()
    };
    let a = downloader("a", two_slots);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.stats().peers, 1, "dials one of three known peers");
    let late = downloader(
        "late",
        SessionConfig {
            peers: vec![a.local_addr()],
            ..quiet
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(late.stats().peers, 1, "a joiner finds the slot left open");
    assert_eq!(a.stats().peers, 2);
}

/// The summary's phases add up to the host's work: the time a staged
/// download waits for the order to place it is its own phase (`wait`),
/// not the place phase's and not hidden in the total.
#[test]
fn the_wait_for_the_order_to_place_is_its_own_phase() {
    use murder_core::session::Session;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 1_000_000, 3);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let seed = Session::start(
            meta.clone(),
            Role::Seed { data: data.clone() },
            SessionConfig {
                use_tracker: false,
                ..local()
            },
        )
        .await
        .unwrap();
        let dest = dir.path().join("out/release.tgz");
        let peer = Session::start(
            meta.clone(),
            Role::Download { dest: dest.clone() },
            SessionConfig {
                use_tracker: false,
                peers: vec![seed.local_addr()],
                place: false,
                ..local()
            },
        )
        .await
        .unwrap();
        tokio::time::timeout(Duration::from_secs(30), peer.wait_complete())
            .await
            .unwrap()
            .unwrap();
        assert!(!dest.exists(), "staged only, not placed yet");
        tokio::time::sleep(Duration::from_millis(400)).await;
        peer.place().await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&data).unwrap());
        let phases = peer.stats().phases;
        assert!(phases.wait >= 0.4, "{phases:?}");
        assert!(
            phases.place < 0.4,
            "the wait is not counted as placing: {phases:?}"
        );
        peer.shutdown().await;
        seed.shutdown().await;
    });
}

/// Rule: the default listeners (tracker and peers) take every address, so a
/// fleet addressed by IPv6 deploys as one addressed by IPv4 does.
#[test]
fn a_fleet_addressed_by_ipv6_reaches_the_default_listeners() {
    // bin/test needs IPv6 loopback (the tracker specs do too): no silent skip.
    std::net::UdpSocket::bind("[::1]:0").expect("this host has no IPv6 loopback (::1)");
    let every = std::net::SocketAddr::new(murder_core::listen::EVERY_ADDRESS, 0);
    let tracker = common::quick_tracker(every);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 1_000_000, 7);
    let meta = torrent(
        &data,
        &format!("[::1]:{}", tracker.local_addr().port()),
        64 * 1024,
    );
    tracker.tracker().allow_torrent(&meta);
    let defaults = SessionConfig::default;
    let _seed =
        SessionRunner::start(meta.clone(), Role::Seed { data: data.clone() }, defaults()).unwrap();
    let dest = dir.path().join("out/release.tgz");
    let peer =
        SessionRunner::start(meta, Role::Download { dest: dest.clone() }, defaults()).unwrap();
    assert_downloaded(&peer, 30, &dest, &data);
}

/// A deployer the servers cannot connect to seeds through a relay on a
/// server (127.0.0.2 here): the torrent names the relay's tracker port,
/// the seed announces to its own tracker on loopback (`announce_to`) with
/// the relay's address, and a downloader that knows only the relay gets
/// every byte through it.
#[test]
fn a_seed_behind_a_relay_announces_to_its_own_tracker_and_is_reached_through_the_relay() {
    use murder_core::relay::{Forward, Relay};
    let dir = tempfile::tempdir().unwrap();
    let tracker =
        TrackerServer::start("127.0.0.1:0".parse().unwrap(), TrackerConfig::default()).unwrap();
    let tracker_port = tracker.local_addr().port();
    let relay_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 2_000_000, 21);
    let meta = torrent(&data, &format!("{relay_ip}:{tracker_port}"), 64 * 1024);
    tracker.tracker().allow_torrent(&meta);
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        SessionConfig {
            announce_ip: Some(relay_ip),
            announce_to: vec![tracker.local_addr().to_string()],
            ..local()
        },
    )
    .unwrap();
    // The seed reached its tracker while nothing listened at the relay's
    // address: it announced where `announce_to` said, not to the torrent's.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tracker
        .tracker()
        .stats()
        .torrents
        .iter()
        .map(|t| t.seeds)
        .sum::<usize>()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the seed never announced to its tracker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The relay listens on the relay's address with the ports' own numbers.
    let forward = |port: u16| Forward {
        listen: std::net::SocketAddr::new(relay_ip, port),
        to: std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), port),
    };
    let relay = Relay::bind(&[forward(tracker_port), forward(seed.local_addr().port())]).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relaying = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(relay.run(async {
            let _ = stopped.await;
        }))
    });
    let dest = dir.path().join("out/release.tgz");
    let peer = SessionRunner::start(meta, Role::Download { dest: dest.clone() }, local()).unwrap();
    assert_downloaded(&peer, 30, &dest, &data);
    assert!(seed.stats().uploaded >= 2_000_000, "{:?}", seed.stats());
    peer.stop();
    seed.stop();
    stop.send(()).unwrap();
    relaying.join().unwrap().unwrap();
}
