//! Tree releases: a host that holds release A downloads release B and
//! fetches only what changed; everything reused is verified first.

mod common;
use common::local;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use murder_core::reuse::{ReuseConfig, ReuseMode};
use murder_core::session::{Role, SessionConfig, SessionRunner, State, Stats};
use murder_core::{create_torrent, CreateOptions, Metainfo, Progress};

const PIECE: u64 = 32 * 1024;

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Release A: 120 files of 1-60 KB in 6 directories, two 400 KB assets,
/// an executable, two links and two empty directories (one of them in
/// another that holds nothing else).
fn release_a(root: &Path) {
    for i in 0..120u64 {
        let len = 1000 + (i * 7919) % 60_000;
        write(
            &root.join(format!("lib/d{}/f{i}.rb", i % 6)),
            &random(len as usize, i),
        );
    }
    write(&root.join("assets/one.bin"), &random(400_000, 1001));
    write(&root.join("assets/two.bin"), &random(400_000, 1002));
    write(&root.join("bin/run"), b"#!/bin/sh\necho run\n");
    fs::set_permissions(root.join("bin/run"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../assets/one.bin", root.join("bin/one")).unwrap();
    std::os::unix::fs::symlink("d0", root.join("lib/current")).unwrap();
    fs::create_dir_all(root.join("log")).unwrap();
    fs::create_dir_all(root.join("tmp/cache")).unwrap();
}

fn aligned(root: &Path) -> Arc<Metainfo> {
    let mut opts = CreateOptions::new("127.0.0.1:9");
    opts.align = true;
    opts.piece_length = Some(PIECE);
    Arc::new(create_torrent(root, &opts, &Progress::new()).unwrap())
}

/// `meta` without BEP 47's per-file `sha1` (as other tools make aligned
/// torrents): reuse then checks files piece by piece.
fn without_file_sha1(meta: &Metainfo) -> Arc<Metainfo> {
    let bytes = meta.to_bytes();
    let key = b"4:sha120:";
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(key) {
            i += key.len() + 20;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let stripped = Metainfo::from_bytes(&out).unwrap();
    assert!(stripped.files.iter().all(|f| f.sha1.is_none()));
    Arc::new(stripped)
}

/// Seeds `root` and downloads it to `dest`, reusing what `reuse` holds.
fn ship(root: &Path, dest: &Path, reuse: Option<(PathBuf, ReuseMode)>) -> Stats {
    ship_torrent(aligned(root), root, dest, reuse)
}

fn ship_torrent(
    meta: Arc<Metainfo>,
    root: &Path,
    dest: &Path,
    reuse: Option<(PathBuf, ReuseMode)>,
) -> Stats {
    let quiet = SessionConfig {
        use_tracker: false,
        ..local()
    };
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed {
            data: root.to_path_buf(),
        },
        quiet.clone(),
    )
    .unwrap();
    let peer = SessionRunner::start(
        meta,
        Role::Download {
            dest: dest.to_path_buf(),
        },
        SessionConfig {
            peers: vec![seed.local_addr()],
            reuse: reuse
                .map(|(dir, mode)| ReuseConfig {
                    dirs: vec![dir],
                    mode,
                })
                .unwrap_or_default(),
            ..quiet
        },
    )
    .unwrap();
    assert_eq!(
        peer.wait_done(Duration::from_secs(60)),
        State::Complete,
        "{:?}",
        peer.stats()
    );
    peer.stats()
}

/// Every entry of a tree: contents (or link target) and mode; a directory
/// only by its name (torrents carry no directory modes).
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap())
        .map(|e| {
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if e.file_type().is_dir() {
                return (rel, (b"(directory)".to_vec(), 0));
            }
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let content = if e.file_type().is_symlink() {
                fs::read_link(e.path())
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                fs::read(e.path()).unwrap()
            };
            (rel, (content, meta.permissions().mode() & 0o777))
        })
        .collect()
}

fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
    for (path, (content, mode)) in &sa {
        let (other, other_mode) = &sb[path];
        assert!(content == other, "{} differs", path.display());
        assert_eq!(mode, other_mode, "{} mode", path.display());
    }
}

/// Release B from A: 8 files edited, 3 added, 3 removed, one asset rebuilt.
/// Returns the bytes of the files that changed or are new, and how many.
fn release_b(a: &Path, b: &Path) -> (u64, u64) {
    copy_tree(a, b);
    let mut changed = 0;
    let mut files = 0;
    for i in [3u64, 17, 29, 44, 58, 71, 90, 111] {
        let path = b.join(format!("lib/d{}/f{i}.rb", i % 6));
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"\n# edited\n");
        changed += bytes.len() as u64;
        files += 1;
        write(&path, &bytes);
    }
    for i in 0..3u64 {
        let bytes = random(20_000, 5000 + i);
        changed += bytes.len() as u64;
        files += 1;
        write(&b.join(format!("lib/new/n{i}.rb")), &bytes);
    }
    for i in [5u64, 6, 7] {
        fs::remove_file(b.join(format!("lib/d{}/f{i}.rb", i % 6))).unwrap();
    }
    let rebuilt = random(400_000, 7777);
    changed += rebuilt.len() as u64;
    files += 1;
    write(&b.join("assets/two.bin"), &rebuilt);
    (changed, files)
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from).follow_links(false).min_depth(1) {
        let e = e.unwrap();
        let target = to.join(e.path().strip_prefix(from).unwrap());
        if e.file_type().is_dir() {
            fs::create_dir_all(&target).unwrap();
        } else if e.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

struct Host {
    _dir: tempfile::TempDir,
    build: PathBuf,
    releases: PathBuf,
}

/// A deployer's build directory with A and B, and a host that holds A.
fn host_with_a() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let build = dir.path().join("build");
    release_a(&build.join("A"));
    let releases = dir.path().join("host/releases");
    let stats = ship(&build.join("A"), &releases.join("A"), None);
    assert_eq!(stats.reused_bytes, 0);
    assert_same_tree(&build.join("A"), &releases.join("A"));
    Host {
        build,
        releases,
        _dir: dir,
    }
}

/// Reuse test 1: B (about 6 % changed) costs at most the changed files'
/// bytes plus one piece per changed file.
#[test]
fn a_host_holding_a_fetches_only_what_changed_in_b() {
    let host = host_with_a();
    let (changed, files) = release_b(&host.build.join("A"), &host.build.join("B"));
    let stats = ship(
        &host.build.join("B"),
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_same_tree(&host.build.join("B"), &host.releases.join("B"));
    let bound = changed + files * PIECE;
    eprintln!(
        "B: downloaded {} bytes (bound {bound}), reused {}",
        stats.downloaded, stats.reused_bytes
    );
    assert!(
        stats.downloaded <= bound,
        "downloaded {} bytes, bound {bound}",
        stats.downloaded
    );
    assert!(stats.reused_bytes > 0);
}

/// Reuse test 2: a file of A whose bytes were altered after A was deployed
/// (same size, same name, mtime put back) is caught by verification and
/// fetched; B ends byte-identical. Checked by the file's SHA-1 (BEP 47, as
/// murder makes torrents).
#[test]
fn an_altered_file_is_caught_by_verification_and_fetched() {
    altered_file_is_fetched(|meta| Arc::new(meta.clone()));
}

/// Reuse test 2 for a torrent without per-file SHA-1: checked piece by piece.
#[test]
fn an_altered_file_is_caught_by_piece_hashes_without_file_sha1() {
    altered_file_is_fetched(without_file_sha1);
}

fn altered_file_is_fetched(torrent: fn(&Metainfo) -> Arc<Metainfo>) {
    let host = host_with_a();
    release_b(&host.build.join("A"), &host.build.join("B"));
    let victim = host.releases.join("A/lib/d2/f2.rb");
    let meta = fs::metadata(&victim).unwrap();
    let mut bytes = fs::read(&victim).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    fs::File::options()
        .write(true)
        .open(&victim)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    let b = host.build.join("B");
    let stats = ship_torrent(
        torrent(&aligned(&b)),
        &b,
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_same_tree(&b, &host.releases.join("B"));
    assert!(
        stats.downloaded >= bytes.len() as u64,
        "the altered file was fetched"
    );
    assert_ne!(
        fs::metadata(&victim).unwrap().ino(),
        fs::metadata(host.releases.join("B/lib/d2/f2.rb"))
            .unwrap()
            .ino(),
        "the altered file was linked, not fetched"
    );
}

/// "Nothing is ever written to a file of an earlier release" (reuse.rs),
/// across a resume: a first attempt hard-links A's files into B's staging
/// area and stops; one of those files of A is then changed in place, so the
/// second attempt finds a staged file that fails verification and is still
/// A's inode. It must fetch that file into an inode of its own, not write
/// through the link into A (which once "repaired" A's file to B's bytes).
#[test]
fn rule_r1_a_resumed_download_never_writes_through_a_link_into_an_earlier_release() {
    let host = host_with_a();
    release_b(&host.build.join("A"), &host.build.join("B"));
    let b = host.build.join("B");
    let meta = aligned(&b);
    let dest = host.releases.join("B");
    let reuse = ReuseConfig {
        dirs: vec![host.releases.clone()],
        mode: ReuseMode::Link,
    };
    // The first attempt: no seed, so it links what A holds and waits.
    let first = SessionRunner::start(
        meta.clone(),
        Role::Download { dest: dest.clone() },
        SessionConfig {
            use_tracker: false,
            reuse: reuse.clone(),
            ..local()
        },
    )
    .unwrap();
    first.stop();
    let staged = murder_core::storage::staging_path(&dest).join("assets/one.bin");
    let old = host.releases.join("A/assets/one.bin");
    assert_eq!(
        fs::metadata(&staged).unwrap().ino(),
        fs::metadata(&old).unwrap().ino()
    );
    // A's file changes in place, in its sixth piece.
    let mut altered = fs::read(&old).unwrap();
    altered[5 * PIECE as usize + 7] ^= 0xff;
    fs::write(&old, &altered).unwrap();
    let stats = ship_torrent(
        meta,
        &b,
        &dest,
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_same_tree(&b, &dest);
    assert!(
        fs::read(&old).unwrap() == altered,
        "A's file was written through the link"
    );
    assert_ne!(
        fs::metadata(dest.join("assets/one.bin")).unwrap().ino(),
        fs::metadata(&old).unwrap().ino()
    );
    assert!(stats.downloaded > 0);
}

/// Reuse test 3: A's files are unchanged after B lands, both with hard
/// links (which share A's unchanged files) and with copies (which share
/// nothing).
#[test]
fn release_a_is_untouched_after_b_lands_with_links_or_copies() {
    for mode in [ReuseMode::Link, ReuseMode::Copy] {
        let host = host_with_a();
        release_b(&host.build.join("A"), &host.build.join("B"));
        let before = snapshot(&host.releases.join("A"));
        ship(
            &host.build.join("B"),
            &host.releases.join("B"),
            Some((host.releases.clone(), mode)),
        );
        assert_same_tree(&host.build.join("B"), &host.releases.join("B"));
        assert_eq!(
            snapshot(&host.releases.join("A")),
            before,
            "{mode:?}: A changed"
        );
        let shared = fs::metadata(host.releases.join("A/assets/one.bin"))
            .unwrap()
            .ino()
            == fs::metadata(host.releases.join("B/assets/one.bin"))
                .unwrap()
                .ino();
        assert_eq!(shared, mode == ReuseMode::Link, "{mode:?}");
    }
}

/// The rule R1 mode tests' start: a host holding A whose executable
/// `bin/run` is 0700 (not 755), and release B built beside A.
fn host_with_a_private_run() -> (Host, PathBuf) {
    let host = host_with_a();
    let a_run = host.releases.join("A/bin/run");
    fs::set_permissions(&a_run, fs::Permissions::from_mode(0o700)).unwrap();
    release_b(&host.build.join("A"), &host.build.join("B"));
    (host, a_run)
}

/// An earlier, failed attempt of `meta` to B: it linked what it could
/// from the host's releases into B's staging area, then stopped. Returns
/// the staging area; asserts that `probe` (a path in the release) was
/// linked from A, else the test would show nothing.
fn earlier_attempt(host: &Host, meta: &Metainfo, probe: &str) -> PathBuf {
    let config = ReuseConfig {
        dirs: vec![host.releases.clone()],
        mode: ReuseMode::Link,
    };
    let none = murder_core::bitfield::Bitfield::new(meta.piece_count());
    let staging = host.releases.join(".B.part");
    murder_core::reuse::reuse(meta, &staging, &none, &config, &[], &Progress::new()).unwrap();
    assert_eq!(
        fs::metadata(host.releases.join("A").join(probe))
            .unwrap()
            .ino(),
        fs::metadata(staging.join(probe)).unwrap().ino(),
        "{probe} was not linked: the test shows nothing"
    );
    staging
}

/// Rule R1 for modes: an executable of A whose mode is not 755 (0700 here)
/// is hard-linked into B, and placing B must not chmod that shared inode:
/// placing set 755 on every executable, widening A's 0700.
#[test]
fn rule_r1_placing_never_changes_the_mode_of_a_linked_file() {
    let (host, a_run) = host_with_a_private_run();
    ship(
        &host.build.join("B"),
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    let b_run = host.releases.join("B/bin/run");
    assert_eq!(
        fs::metadata(&a_run).unwrap().ino(),
        fs::metadata(&b_run).unwrap().ino(),
        "bin/run was not linked: the test shows nothing"
    );
    assert_eq!(
        fs::metadata(&a_run).unwrap().mode() & 0o7777,
        0o700,
        "A's mode changed"
    );
}

/// Rule R1 across attempts: a file an earlier, failed attempt linked from
/// release A into the staging area is resumed as verified, not as linked
/// by this run; placing chmodded it, and so A's file.
#[test]
fn rule_r1_a_link_made_by_an_earlier_attempt_keeps_its_mode() {
    let (host, a_run) = host_with_a_private_run();
    earlier_attempt(&host, &aligned(&host.build.join("B")), "bin/run");
    ship(
        &host.build.join("B"),
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_eq!(
        fs::metadata(&a_run).unwrap().mode() & 0o7777,
        0o700,
        "A's mode changed"
    );
}

/// Rule R1 across torrents: an earlier attempt of another torrent, in
/// which `lib/d0/f0.rb` was not executable, linked A's 0644 file into the
/// staging area; the torrent shipped now marks the same bytes executable.
/// The file resumes as verified, and placing chmodded A's inode to 755.
#[test]
fn rule_r1_a_link_whose_mode_no_longer_fits_is_not_chmodded() {
    let host = host_with_a();
    let b = host.build.join("B");
    release_b(&host.build.join("A"), &b);
    let a_file = host.releases.join("A/lib/d0/f0.rb");
    earlier_attempt(&host, &aligned(&b), "lib/d0/f0.rb");
    fs::set_permissions(b.join("lib/d0/f0.rb"), fs::Permissions::from_mode(0o755)).unwrap();
    ship(
        &b,
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_eq!(
        fs::metadata(&a_file).unwrap().mode() & 0o7777,
        0o644,
        "A's mode changed"
    );
    assert_same_tree(&b, &host.releases.join("B"));
}

/// Rule R2 (a placed file has the torrent's mode): an earlier attempt of
/// another torrent linked A's executable `bin/run`; A's copy is gone since,
/// so the staged file is an inode of its own, still 755. The torrent
/// shipped now has the same bytes without `x`: placing only ever added an
/// execute bit, and B's `bin/run` landed executable.
#[test]
fn rule_r2_an_execute_bit_left_by_an_earlier_attempt_is_cleared() {
    let host = host_with_a();
    let b = host.build.join("B");
    release_b(&host.build.join("A"), &b);
    earlier_attempt(&host, &aligned(&b), "bin/run");
    fs::remove_file(host.releases.join("A/bin/run")).unwrap();
    fs::set_permissions(b.join("bin/run"), fs::Permissions::from_mode(0o644)).unwrap();
    ship(
        &b,
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_same_tree(&b, &host.releases.join("B"));
}

/// Rule R1 with `ReuseMode::Copy`: an earlier attempt made with links, then
/// a retry with copies (the application writes release files in place).
/// The links it left in the staging area were kept, so B shared A's inodes.
#[test]
fn rule_r1_a_retry_with_copies_keeps_no_link_of_an_earlier_attempt() {
    let host = host_with_a();
    let b = host.build.join("B");
    release_b(&host.build.join("A"), &b);
    earlier_attempt(&host, &aligned(&b), "lib/d0/f0.rb");
    ship(
        &b,
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Copy)),
    );
    let shared: Vec<_> = walkdir::WalkDir::new(host.releases.join("B"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file() && e.metadata().unwrap().nlink() > 1)
        .map(|e| e.path().to_path_buf())
        .collect();
    assert!(shared.is_empty(), "linked under :copy: {shared:?}");
    assert_same_tree(&b, &host.releases.join("B"));
}

/// Rule R1 across torrents, in file order: an earlier attempt of an
/// aligned torrent linked `assets/one.bin` and `assets/two.bin` from A;
/// the torrent shipped now is unaligned, so a piece spans one.bin's tail
/// and two.bin's head, and two.bin's tail changed. one.bin was checked
/// first (whole: kept as a link), then two.bin was removed with every
/// piece of it, that shared one among them: it was fetched again and
/// written through the link into A's one.bin.
#[test]
fn rule_r1_a_link_whose_piece_is_lost_to_a_later_file_is_not_written() {
    let host = host_with_a();
    let b = host.build.join("B");
    copy_tree(&host.build.join("A"), &b);
    // No links, no empty directories: an unaligned torrent has no BEP 47
    // link entries, nor murder's list of empty directories.
    fs::remove_file(b.join("lib/current")).unwrap();
    fs::remove_file(b.join("bin/one")).unwrap();
    fs::remove_dir(b.join("log")).unwrap();
    fs::remove_dir_all(b.join("tmp")).unwrap();
    fs::set_permissions(b.join("bin/run"), fs::Permissions::from_mode(0o644)).unwrap();
    earlier_attempt(&host, &aligned(&b), "assets/one.bin");
    let a_one = host.releases.join("A/assets/one.bin");
    let mut two = fs::read(b.join("assets/two.bin")).unwrap();
    let end = two.len();
    two[end - 100..].fill(0xEE);
    write(&b.join("assets/two.bin"), &two);
    let mut opts = CreateOptions::new("127.0.0.1:9");
    opts.piece_length = Some(PIECE);
    let unaligned = Arc::new(create_torrent(&b, &opts, &Progress::new()).unwrap());
    let before = fs::metadata(&a_one).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    ship_torrent(
        unaligned,
        &b,
        &host.releases.join("B"),
        Some((host.releases.clone(), ReuseMode::Link)),
    );
    assert_same_tree(&b, &host.releases.join("B"));
    assert_eq!(
        fs::metadata(&a_one).unwrap().modified().unwrap(),
        before,
        "A's one.bin was written"
    );
}

/// Rule P4 with reuse: files linked from a failed attempt's staging area
/// (`.A.part`, whose data may not have reached the disk) are synced with
/// what was downloaded; files linked from a release are durable already.
#[test]
fn rule_p4_links_from_a_failed_attempts_staging_area_are_synced() {
    let host = host_with_a();
    release_b(&host.build.join("A"), &host.build.join("B"));
    let meta = aligned(&host.build.join("B"));
    let bring_in = |releases: &Path| {
        let staging = releases.join(".B.part");
        let config = ReuseConfig {
            dirs: vec![releases.to_path_buf()],
            mode: ReuseMode::Link,
        };
        let none = murder_core::bitfield::Bitfield::new(meta.piece_count());
        let reused =
            murder_core::reuse::reuse(&meta, &staging, &none, &config, &[], &Progress::new())
                .unwrap();
        fs::remove_dir_all(&staging).unwrap();
        reused
    };
    let from_release = bring_in(&host.releases);
    assert!(!from_release.linked.is_empty());
    assert!(
        from_release.linked_from_staging.is_empty(),
        "{from_release:?}"
    );
    fs::rename(host.releases.join("A"), host.releases.join(".A.part")).unwrap();
    let from_attempt = bring_in(&host.releases);
    assert_eq!(from_attempt.linked, from_release.linked);
    assert_eq!(from_attempt.linked_from_staging, from_attempt.linked);
}

/// Reuse test 4: a release that only renames and moves files moves no
/// file data. A renamed file shorter than a piece is found by its own
/// SHA-1 (BEP 47), else by its first piece's hash, as without `sha1`.
#[test]
fn a_rename_only_release_moves_no_file_data() {
    let host = host_with_a();
    let b = host.build.join("B");
    copy_tree(&host.build.join("A"), &b);
    fs::rename(b.join("lib/d1"), b.join("lib/moved")).unwrap();
    fs::rename(b.join("assets/two.bin"), b.join("assets/renamed.bin")).unwrap();
    let with_sha1 = aligned(&b);
    for (name, meta) in [
        ("B", with_sha1.clone()),
        ("B2", without_file_sha1(&with_sha1)),
    ] {
        let stats = ship_torrent(
            meta,
            &b,
            &host.releases.join(name),
            // A alone: B, placed first, holds B2's files at their paths.
            Some((host.releases.join("A"), ReuseMode::Link)),
        );
        assert_same_tree(&b, &host.releases.join(name));
        assert_eq!(stats.downloaded, 0, "{name}: {stats:?}");
    }
}

/// Rule T1 of STATE.md (a piece every connected peer holds need not leave
/// before others leave twice): one steering seed of B serves two hosts
/// holding A, one after the other, as a retried or late host is served.
/// Each needs only the changed pieces; the seed sent those to the first, and
/// the pieces both hold already (never sent to anyone) must not keep it from
/// sending them again to the second.
#[test]
fn rule_t1_a_seed_serves_hosts_holding_a_one_after_another() {
    let first = host_with_a();
    let second = tempfile::tempdir().unwrap();
    let second_releases = second.path().join("releases");
    copy_tree(&first.releases.join("A"), &second_releases.join("A"));
    release_b(&first.build.join("A"), &first.build.join("B"));
    let root = first.build.join("B");
    let meta = aligned(&root);
    let quiet = SessionConfig {
        use_tracker: false,
        ..local()
    };
    let seed = SessionRunner::start(
        meta.clone(),
        Role::Seed { data: root.clone() },
        quiet.clone(),
    )
    .unwrap();
    for releases in [&first.releases, &second_releases] {
        let peer = SessionRunner::start(
            meta.clone(),
            Role::Download {
                dest: releases.join("B"),
            },
            SessionConfig {
                peers: vec![seed.local_addr()],
                reuse: ReuseConfig {
                    dirs: vec![releases.to_path_buf()],
                    mode: ReuseMode::Link,
                },
                ..quiet.clone()
            },
        )
        .unwrap();
        assert_eq!(
            peer.wait_done(Duration::from_secs(30)),
            State::Complete,
            "{}: {:?}",
            releases.display(),
            peer.stats()
        );
        assert!(peer.stats().reused_bytes > 0);
        peer.stop();
        assert_same_tree(&root, &releases.join("B"));
    }
    seed.stop();
}

/// A deploy user's earlier release may hold read-only files (0444, as
/// `chmod -R a-w` leaves them): linked into the new release, such a file
/// was opened for writing to be served, and the host failed its own
/// download ("Permission denied") once a peer asked for it. Root writes
/// anything, so the check runs as an unprivileged user: this test runs
/// itself again as `nobody` when it is root.
#[test]
fn a_read_only_file_linked_from_an_earlier_release_can_be_served() {
    const CHILD: &str = "MURDER_TEST_READ_ONLY_ROOT";
    let serve = |root: &Path| {
        let meta = Arc::new(Metainfo::load(root.join("b.torrent")).unwrap());
        let config = ReuseConfig {
            dirs: vec![root.join("releases")],
            mode: ReuseMode::Link,
        };
        let dest = root.join("releases/B");
        let (storage, _, reused) = murder_core::storage::Storage::for_download(
            meta.clone(),
            &dest,
            &Progress::new(),
            true,
            &config,
        )
        .unwrap();
        let index = meta.files.iter().position(|f| f.path == ["ro"]).unwrap();
        assert!(
            reused.linked.contains(&index),
            "ro was not linked: the test shows nothing"
        );
        let offset: u64 = meta.files[..index].iter().map(|f| f.length).sum();
        let piece = (offset / meta.piece_length) as u32;
        let mut buf = vec![0u8; 16 * 1024];
        storage
            .read(piece, 0, &mut buf)
            .expect("a read-only linked file is read");
        assert_eq!(
            buf,
            fs::read(root.join("releases/A/ro")).unwrap()[..16 * 1024]
        );
    };
    if let Ok(root) = std::env::var(CHILD) {
        serve(Path::new(&root));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let a = root.join("releases/A");
    write(&a.join("ro"), &random(40_000, 7));
    write(&a.join("other"), &random(30_000, 8));
    fs::set_permissions(a.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();
    let b = root.join("build/B");
    write(&b.join("ro"), &fs::read(a.join("ro")).unwrap());
    write(&b.join("other"), &random(30_000, 9));
    fs::set_permissions(b.join("ro"), fs::Permissions::from_mode(0o444)).unwrap();
    fs::write(root.join("b.torrent"), aligned(&b).to_bytes()).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        serve(root);
        return;
    }
    let nobody = 65534;
    for entry in walkdir::WalkDir::new(root) {
        std::os::unix::fs::lchown(entry.unwrap().path(), Some(nobody), Some(nobody)).unwrap();
    }
    use std::os::unix::process::CommandExt;
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_read_only_file_linked_from_an_earlier_release_can_be_served",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, root)
        .uid(nobody)
        .gid(nobody)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // A renamed test would run nothing and exit 0: the child must have run it.
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "as nobody: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Rule R3 of STATE.md: a destination that exists counts as done only if
/// it is the release, modes and links included; otherwise the download is
/// refused, naming the difference, and the tree is left as it was.
#[test]
fn rule_r3_an_existing_tree_counts_only_as_the_release() {
    let host = host_with_a();
    let a = host.build.join("A");
    let dest = host.releases.join("A");
    let meta = aligned(&a);
    let again = || {
        SessionRunner::start(
            meta.clone(),
            Role::Download { dest: dest.clone() },
            SessionConfig {
                use_tracker: false,
                ..local()
            },
        )
    };
    let done = again().unwrap();
    assert_eq!(done.wait_done(Duration::from_secs(10)), State::Complete);
    drop(done);

    let refused = |change: &dyn Fn(), undo: &dyn Fn(), says: &str| {
        change();
        let before = snapshot(&dest);
        let err = again()
            .err()
            .expect("a changed tree must be refused")
            .to_string();
        assert!(
            err.contains("already exists with this torrent's data"),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
        assert_eq!(snapshot(&dest), before, "the tree is left as it was");
        undo();
    };
    let run = dest.join("bin/run");
    refused(
        &|| fs::set_permissions(&run, fs::Permissions::from_mode(0o644)).unwrap(),
        &|| fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap(),
        "bin/run should be executable",
    );
    let link = dest.join("bin/one");
    refused(
        &|| {
            fs::remove_file(&link).unwrap();
            fs::copy(dest.join("assets/one.bin"), &link).unwrap();
        },
        &|| {
            fs::remove_file(&link).unwrap();
            std::os::unix::fs::symlink("../assets/one.bin", &link).unwrap();
        },
        "bin/one should be a symbolic link",
    );
    refused(
        &|| fs::remove_file(&link).unwrap(),
        &|| std::os::unix::fs::symlink("../assets/one.bin", &link).unwrap(),
        "bin/one is missing",
    );
    let extra = dest.join("lib/d0/stale.rb");
    refused(
        &|| fs::write(&extra, b"old").unwrap(),
        &|| fs::remove_file(&extra).unwrap(),
        "stale.rb is not in the torrent",
    );
    // A directory moved aside and linked back: every file reads the same
    // through the link, but the tree is not the release.
    let (lib, aside) = (dest.join("lib/d2"), host.releases.join("d2-aside"));
    refused(
        &|| {
            fs::rename(&lib, &aside).unwrap();
            std::os::unix::fs::symlink(&aside, &lib).unwrap();
        },
        &|| {
            fs::remove_file(&lib).unwrap();
            fs::rename(&aside, &lib).unwrap();
        },
        "lib/d2 should be a directory",
    );
    // Undone, it is the release again.
    let done = again().unwrap();
    assert_eq!(done.wait_done(Duration::from_secs(10)), State::Complete);
}

/// Rule R4 of STATE.md: an earlier file is read at most once to find out
/// what it holds, however many files of the new release share its size.
/// Here 300 files have one size and B changes a third of them (the
/// torrent's last file, whose piece is short, has a size of its own).
#[test]
fn rule_r4_an_earlier_file_is_read_once_however_many_files_share_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("releases/A");
    let b = dir.path().join("build/B");
    for i in 0..300u64 {
        let bytes = random(1000, i);
        write(&a.join(format!("f{i}")), &bytes);
        let changed = i % 3 == 0;
        write(
            &b.join(format!("f{i}")),
            &if changed {
                random(1000, 10_000 + i)
            } else {
                bytes
            },
        );
    }
    write(&a.join("zz"), &random(5000, 1));
    write(&b.join("zz"), &random(5000, 1));
    let config = ReuseConfig {
        dirs: vec![dir.path().join("releases")],
        mode: ReuseMode::Link,
    };
    let (_, _, reused) = murder_core::storage::Storage::for_download(
        aligned(&b),
        &dir.path().join("releases/B"),
        &Progress::new(),
        true,
        &config,
    )
    .unwrap();
    assert_eq!(reused.linked.len(), 201);
    assert!(
        reused.files_read <= 301 + 100,
        "{} earlier files read: 301 of them, 100 changed",
        reused.files_read
    );
}
