//! Disk faults a deploy meets: a host whose filesystem is full. Rule W1 of
//! `src/session/STATE.md`: a failed write fails the session at once, named,
//! and the destination is never created. Needs root (it mounts a tmpfs).

mod common;
use common::{local, random_file, torrent};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use murder_core::session::{Role, SessionConfig, SessionRunner, State};

/// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount(8)");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk { _dir: dir, path }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn download_onto(disk: &Path, config: SessionConfig) -> (State, Duration, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 3_000_000, 31);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    download_torrent_onto(disk, config, meta, data)
}

fn download_torrent_onto(
    disk: &Path,
    config: SessionConfig,
    meta: std::sync::Arc<murder_core::Metainfo>,
    data: PathBuf,
) -> (State, Duration, PathBuf) {
    let quiet = SessionConfig {
        use_tracker: false,
        ..local()
    };
    let dest = disk.join(data.file_name().unwrap());
    let seed = SessionRunner::start(meta.clone(), Role::Seed { data }, quiet.clone()).unwrap();
    let started = Instant::now();
    let state = match SessionRunner::start(
        meta,
        Role::Download { dest: dest.clone() },
        SessionConfig {
            peers: vec![seed.local_addr()],
            ..config
        },
    ) {
        Ok(peer) => peer.wait_done(Duration::from_secs(20)),
        Err(e) => State::Failed(e.to_string()),
    };
    (state, started.elapsed(), dest)
}

fn assert_fails_with_no_space(state: State, took: Duration, dest: &Path) {
    let State::Failed(reason) = state else {
        panic!("a download onto a full disk must fail, not stay {state:?} for {took:?}");
    };
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to fail: {reason}"
    );
    assert!(
        reason.to_lowercase().contains("no space"),
        "the error says why: {reason}"
    );
    assert!(
        reason.contains(&dest.parent().unwrap().display().to_string()),
        "the error names the path: {reason}"
    );
    assert!(!dest.exists(), "nothing at the destination");
}

/// Rule W1 with space reserved up front: the release does not fit, so the
/// session fails before it downloads anything.
#[test]
fn rule_w1_a_release_that_does_not_fit_fails_at_once() {
    let disk = SmallDisk::mount("1m");
    let (state, took, dest) = download_onto(&disk.path, local());
    assert_fails_with_no_space(state, took, &dest);
    assert!(
        std::fs::read_dir(&disk.path).unwrap().next().is_none(),
        "a staging area with nothing verified in it is not left behind"
    );
}

/// Rule W1 when the disk fills during the download (sparse files, no
/// space reserved): the first write that fails fails the session.
#[test]
fn rule_w1_a_write_that_fails_fails_the_session() {
    let disk = SmallDisk::mount("1m");
    let (state, took, dest) = download_onto(
        &disk.path,
        SessionConfig {
            preallocate: false,
            ..local()
        },
    );
    assert_fails_with_no_space(state, took, &dest);
}

/// Rule W1 for a tree of small files, which are not reserved one by one:
/// their total is checked against the free space, so the session still
/// fails before it downloads anything, and leaves nothing behind.
#[test]
fn rule_w1_a_tree_of_small_files_that_does_not_fit_fails_at_once() {
    let disk = SmallDisk::mount("1m");
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("release");
    for i in 0..200 {
        let sub = tree.join(format!("lib/d{}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        random_file(&sub.join(format!("f{i}.rb")), 10_000, i);
    }
    let mut opts = murder_core::CreateOptions::new("127.0.0.1:9");
    opts.align = true;
    let meta = std::sync::Arc::new(
        murder_core::create_torrent(&tree, &opts, &murder_core::Progress::new()).unwrap(),
    );
    let (state, took, dest) = download_torrent_onto(&disk.path, local(), meta, tree);
    assert_fails_with_no_space(state, took, &dest);
    assert!(
        std::fs::read_dir(&disk.path).unwrap().next().is_none(),
        "a staging area with nothing verified in it is not left behind"
    );
}

/// Rule W1 for reads: a seed whose file was cut short after it was checked
/// fails at once, naming the file, at the first request it cannot read
/// (it used to log, reject, and go on seeding, so every downloader waited
/// out its stall timeout).
#[test]
fn rule_w1_a_read_that_fails_fails_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 4_000_000, 3);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    let quiet = SessionConfig {
        use_tracker: false,
        ..local()
    };
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: data.clone() },
        quiet.clone(),
    )
    .unwrap();
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let peer = SessionRunner::start(
        meta,
        Role::Download {
            dest: dir.path().join("host/release.tgz"),
        },
        SessionConfig {
            peers: vec![seed.local_addr()],
            ..quiet
        },
    )
    .unwrap();
    let started = Instant::now();
    while !matches!(seed.state(), State::Failed(_)) && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    match seed.state() {
        State::Failed(reason) => assert!(reason.contains("release.tgz"), "{reason}"),
        other => panic!("the seed is {other:?} after a failed read"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    peer.stop();
    seed.stop();
}

/// Rule W1 after completion: a download that is complete goes on serving
/// (a host lingers), and its release may break under it (a rollback or a
/// cleanup removes it). A read that fails then stops its serving, named
/// in the log, and chokes the peer: it answered each request with a
/// Reject, silently, and the peer asked again at once, without end.
#[test]
fn rule_w1_a_complete_download_whose_data_breaks_stops_serving() {
    use common::wire_peer::{dial, FAST};
    use murder_core::wire::{BlockRequest, Message};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("release.tgz");
    random_file(&data, 1_000_000, 5);
    let meta = torrent(&data, "127.0.0.1:9", 64 * 1024);
    let quiet = SessionConfig {
        use_tracker: false,
        ..local()
    };
    let seed = SessionRunner::start(meta.clone(), Role::Seed { data }, quiet.clone()).unwrap();
    let dest = dir.path().join("host/release.tgz");
    let peer = SessionRunner::start(
        meta.clone(),
        Role::Download { dest: dest.clone() },
        SessionConfig {
            peers: vec![seed.local_addr()],
            ..quiet
        },
    )
    .unwrap();
    assert_eq!(peer.wait_done(Duration::from_secs(30)), State::Complete);
    seed.stop();
    std::fs::File::options()
        .write(true)
        .open(&dest)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let (addr, info_hash, pieces) = (peer.local_addr(), meta.info_hash(), meta.piece_count());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let choked = runtime.block_on(async move {
        let (mut r, mut w) = dial(addr, FAST, *b"-XX0001-askeraskeras", info_hash, pieces)
            .await
            .unwrap();
        assert!(w.send(&[Message::HaveNone, Message::Interested]).await);
        let ask = BlockRequest {
            piece: 10,
            offset: 0,
            length: 16384,
        };
        let mut unchoked = false;
        let mut rejects = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, r.next()).await {
            match message {
                Message::Unchoke if !unchoked => {
                    unchoked = true;
                    assert!(w.send(&[Message::Request(ask)]).await);
                }
                Message::Reject(_) => {
                    rejects += 1;
                    assert!(w.send(&[Message::Request(ask)]).await);
                }
                Message::Choke if unchoked => return Some(rejects),
                _ => {}
            }
        }
        None
    });
    assert!(
        choked.is_some(),
        "the peer was never choked: every request met a silent Reject"
    );
    assert_eq!(
        peer.state(),
        State::Complete,
        "the download itself stays done"
    );
    peer.stop();
}
