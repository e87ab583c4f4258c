# frozen_string_literal: true

# murder's peer engine in swarms with python3-libtorrent and aria2c, through
# murder's tracker on loopback. Torrents are private and no client runs DHT,
# local discovery or peer exchange, so every peer comes from the tracker.
RSpec.describe "the peer engine with real BitTorrent clients" do
  let(:tracker) { Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 2).start }
  let(:seed_dir) { File.join(tmpdir, "seed").tap { |d| FileUtils.mkdir_p(d) } }
  let(:data) { File.join(seed_dir, "release.tgz").tap { |f| File.binwrite(f, Random.new(21).bytes(5_000_000)) } }
  let(:torrent) do
    path = File.join(tmpdir, "release.torrent")
    murder("make-torrent", data, "--tracker", "127.0.0.1:#{tracker.port}", "--private", "--piece-length", "64K", "-o", path)
    tracker.allow(path)
    path
  end

  after { tracker.stop }

  def log(name) = File.join(tmpdir, "#{name}.log")

  def murder_seed(*extra)
    spawn_logged(MURDER_BIN, "seed", torrent, data, "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--progress", "none",
                 *extra, log: log("murder-seed"))
    eventually(timeout: 30) { tracker.stats["torrents"].first["seeds"] >= 1 }
  end

  # libtorrent with its high_performance_seed settings, or (defaults: true)
  # with its default settings.
  def lt_download(dir, wait: true, defaults: false)
    pid = spawn_logged(SYSTEM_PYTHON, LT_TOOL, defaults ? "download-default" : "download", torrent, dir, free_port, 120,
                       log: log("lt-#{File.basename(dir)}"))
    wait ? expect_success(pid, "libtorrent") : pid
  end

  # transmission-cli 3.00 (Debian), which asks for blocks once a second and
  # looks at `have`s on a timer: it exits once its copy is verified.
  def transmission_download(dir)
    FileUtils.mkdir_p(dir)
    done = File.join(tmpdir, "transmission-done.sh")
    File.write(done, "#!/bin/sh\nkill $PPID\n")
    File.chmod(0o755, done)
    pid = spawn_logged("timeout", "120", "transmission-cli", "-g", File.join(tmpdir, "transmission"), "-M", "-et",
                       "-p", free_port.to_s, "-f", done, "-w", dir, torrent, log: log("transmission"))
    Process.wait2(pid)
    @spawned.delete(pid)
  end

  def aria2_args(dir)
    ["aria2c", "--dir", dir, "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
     "--enable-peer-exchange=false", "--listen-port", free_port.to_s, "--summary-interval=0",
     "--console-log-level=warn", "--bt-tracker-interval=2"]
  end

  def aria2_download(dir, wait: true)
    pid = spawn_logged("timeout", "120", *aria2_args(dir), "--seed-time=0", "--bt-stop-timeout=60", torrent,
                       log: log("aria2-#{File.basename(dir)}"))
    wait ? expect_success(pid, "aria2c") : pid
  end

  def murder_peer(dest, wait: true, progress: "none", extra: [])
    pid = spawn_logged(MURDER_BIN, "peer", torrent, dest, "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--linger", "0",
                       "--progress", progress, *extra, log: log("murder-#{File.basename(File.dirname(dest))}"))
    wait ? expect_success(pid, "murder peer") : pid
  end

  def summary(dest)
    File.foreach(log("murder-#{File.basename(File.dirname(dest))}")).map { |l| JSON.parse(l) rescue nil }
        .compact.find { |e| e["event"] == "complete" }
  end

  def expect_success(pid, what)
    _, status = Process.wait2(pid)
    @spawned.delete(pid)
    expect(status).to be_success, "#{what} failed: #{Dir[File.join(tmpdir, '*.log')].map { |f| "#{f}:\n#{File.read(f)[-2000..] || File.read(f)}" }.join("\n")}"
  end

  def expect_copy(path)
    expect(File.exist?(path)).to be(true), "#{path} missing"
    expect(FileUtils.compare_file(path, data)).to be(true), "#{path} differs"
  end

  it "serves libtorrent and aria2c downloaders from a murder seeder" do
    murder_seed
    lt_download(File.join(tmpdir, "lt"))
    expect_copy(File.join(tmpdir, "lt/release.tgz"))
    aria2_download(File.join(tmpdir, "aria2"))
    expect_copy(File.join(tmpdir, "aria2/release.tgz"))
  end

  # Rule C2 of STATE.md with real clients: a steering seed serves clients
  # that know nothing of steering (the scripted BEP 3-only client is in
  # ext/murder-core/tests/conformance.rs).
  it "serves libtorrent with default settings, aria2c and transmission from a steering seeder" do
    murder_seed
    lt_download(File.join(tmpdir, "lt"), defaults: true)
    expect_copy(File.join(tmpdir, "lt/release.tgz"))
    aria2_download(File.join(tmpdir, "aria2"))
    expect_copy(File.join(tmpdir, "aria2/release.tgz"))
    transmission_download(File.join(tmpdir, "transmission"))
    expect_copy(File.join(tmpdir, "transmission/release.tgz"))
  end

  # Rule C1 of STATE.md: libtorrent with its default 8 unchoke slots (for
  # loopback peers too), 12 downloaders slow enough (800 KB/s each) that it
  # rotates its slots during the download: it chokes peers with requests
  # outstanding and rejects those (BEP 6). No murder peer drops the
  # connection for it (main before this rule dropped 2 per run).
  it "keeps its connections to a libtorrent seeder that chokes and rejects as it rotates its slots" do
    torrent
    spawn_logged(SYSTEM_PYTHON, LT_TOOL, "seed-default", torrent, seed_dir, free_port, 1_000_000, log: log("lt-seed"))
    eventually(timeout: 30) { tracker.stats["torrents"].first["seeds"] >= 1 }
    dests = (1..12).map { |i| File.join(tmpdir, "m#{i}/release.tgz") }
    pids = dests.map { |d| murder_peer(d, wait: false, progress: "json", extra: ["--download-limit", "800K"]) }
    pids.each { |pid| expect_success(pid, "murder peer") }
    dests.each do |dest|
      expect_copy(dest)
      expect(summary(dest)["protocol_errors"]).to eq(0), "#{dest}: #{summary(dest)}"
    end
  end

  # A tree with an executable, a link and files that need padding.
  def aligned_tree(root)
    FileUtils.mkdir_p(File.join(root, "bin"))
    FileUtils.mkdir_p(File.join(root, "lib/deep"))
    File.write(File.join(root, "bin/run"), "#!/bin/sh\necho run\n")
    File.chmod(0o755, File.join(root, "bin/run"))
    File.binwrite(File.join(root, "lib/a.bin"), Random.new(31).bytes(150_000))
    File.binwrite(File.join(root, "lib/deep/b.rb"), Random.new(32).bytes(999))
    File.symlink("../lib/a.bin", File.join(root, "bin/a"))
    root
  end

  # diff -r: links compared as links, or (follow: true) as what they point to;
  # entries named `exclude` left out.
  def same_tree?(a, b, follow: false, exclude: nil)
    out, status = Open3.capture2e("diff", "-r", *(follow ? [] : ["--no-dereference"]),
                                  *(exclude ? ["--exclude=#{exclude}"] : []), a, b)
    [status.success?, out]
  end

  it "serves a murder tree torrent (pads, attributes, a link) to libtorrent, which reads it alike and writes no pads" do
    root = aligned_tree(File.join(tmpdir, "tree/release"))
    # murder's list of empty directories is a key of `info` that other
    # clients ignore: under the same info-hash, but not made by them.
    FileUtils.mkdir_p(File.join(root, "log"))
    path = File.join(tmpdir, "tree.torrent")
    murder("make-torrent", root, "--align", "--tracker", "127.0.0.1:#{tracker.port}", "--private", "-o", path)
    ours = JSON.parse(murder("info", "--json", path))
    expect(ours["empty_dirs"]).to eq([["log"]])
    expect(ours["info_hash"]).to eq(JSON.parse(libtorrent("info", path))["info_hash"])
    expect(ours["files"]).to include({ "path" => %w[bin a], "length" => 0, "symlink" => %w[lib a.bin] },
                                     { "path" => %w[bin run], "length" => 19, "executable" => true })
    tracker.allow(path)
    spawn_logged(MURDER_BIN, "seed", path, root, "--ip", "127.0.0.1", "--bind", "127.0.0.1", log: log("murder-seed"))
    eventually(timeout: 30) { tracker.stats["torrents"].any? { |t| t["seeds"] >= 1 } }
    pid = spawn_logged(SYSTEM_PYTHON, LT_TOOL, "download", path, File.join(tmpdir, "lt"), free_port, 120,
                       log: log("lt-tree"))
    expect_success(pid, "libtorrent")
    same, diff = same_tree?(root, File.join(tmpdir, "lt/release"), exclude: "log")
    expect(same).to be(true), diff
    expect(File.executable?(File.join(tmpdir, "lt/release/bin/run"))).to be(true)
    expect(Dir.exist?(File.join(tmpdir, "lt/release/.pad"))).to be(false)
  end

  it "downloads a libtorrent-made torrent with pad files from a libtorrent seeder" do
    root = aligned_tree(File.join(seed_dir, "hybrid"))
    path = File.join(tmpdir, "hybrid.torrent")
    libtorrent("create", root, path, "hybrid", 16_384, "http://127.0.0.1:#{tracker.port}/announce")
    info = JSON.parse(murder("info", "--json", path))
    expect(info["total_length"]).to be > info["files"].sum { |f| f["length"] } # pads in the pieces
    tracker.allow(path)
    spawn_logged(SYSTEM_PYTHON, LT_TOOL, "seed", path, seed_dir, free_port, log: log("lt-seed"))
    eventually(timeout: 30) { tracker.stats["torrents"].any? { |t| t["seeds"] >= 1 } }
    dest = File.join(tmpdir, "m/hybrid")
    pid = spawn_logged(MURDER_BIN, "peer", path, dest, "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--linger", "0",
                       "--progress", "none", log: log("murder-hybrid"))
    expect_success(pid, "murder peer")
    same, diff = same_tree?(root, dest, follow: true) # libtorrent makes a link a copy of its target
    expect(same).to be(true), diff
    expect(Dir.exist?(File.join(dest, ".pad"))).to be(false)
  end

  it "downloads with murder peer from a libtorrent seeder" do
    torrent
    spawn_logged(SYSTEM_PYTHON, LT_TOOL, "seed", torrent, seed_dir, free_port, log: log("lt-seed"))
    eventually(timeout: 30) { tracker.stats["torrents"].first["seeds"] >= 1 }
    murder_peer(File.join(tmpdir, "m/release.tgz"))
    expect_copy(File.join(tmpdir, "m/release.tgz"))
  end

  it "downloads with murder peer from an aria2c seeder" do
    torrent
    spawn_logged(*aria2_args(seed_dir), "--check-integrity=true", "--seed-ratio=0.0", "--seed-time=9999", torrent,
                 log: log("aria2-seed"))
    eventually(timeout: 30) { tracker.stats["torrents"].first["seeds"] >= 1 }
    murder_peer(File.join(tmpdir, "m/release.tgz"))
    expect_copy(File.join(tmpdir, "m/release.tgz"))
  end

  it "completes a mixed swarm of murder, libtorrent and aria2 peers" do
    murder_seed
    pids = {
      murder_peer(File.join(tmpdir, "m1/release.tgz"), wait: false) => "murder peer 1",
      murder_peer(File.join(tmpdir, "m2/release.tgz"), wait: false) => "murder peer 2",
      lt_download(File.join(tmpdir, "lt"), wait: false) => "libtorrent",
      aria2_download(File.join(tmpdir, "aria2"), wait: false) => "aria2c"
    }
    pids.each { |pid, what| expect_success(pid, what) }
    %w[m1 m2 lt aria2].each { |d| expect_copy(File.join(tmpdir, d, "release.tgz")) }
  end
end
