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
