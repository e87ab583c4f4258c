# frozen_string_literal: true

# Real clients swarm through `murder tracker` on loopback: python3-libtorrent
# seeds, aria2c downloads. The torrent is private (BEP 27) and both clients
# run without DHT, local peer discovery or peer exchange, so the downloader
# can learn of the seeder only from our tracker.
RSpec.describe "murder tracker with real BitTorrent clients" do
  def start_tracker(allow_dir)
    pidfile = File.join(tmpdir, "tracker.pid")
    out = murder("tracker", "--port", "0", "--bind", "127.0.0.1", "--allow-dir", allow_dir,
                 "--interval", "2", "--pidfile", pidfile, "--daemon", "--log", File.join(tmpdir, "tracker.log"))
    port = Integer(out[%r{http://127\.0\.0\.1:(\d+)/announce}, 1])
    [port, pidfile]
  end

  def stats(port)
    JSON.parse(http_get(port, "/stats.json").body)["torrents"]
  end

  it "lets aria2c download from a libtorrent seeder it learned of only from the tracker" do
    allow_dir = File.join(tmpdir, "allow")
    FileUtils.mkdir_p(allow_dir)
    port, pidfile = start_tracker(allow_dir)
    pid = Integer(File.read(pidfile).split.first)

    seed_dir = File.join(tmpdir, "seed")
    FileUtils.mkdir_p(seed_dir)
    data = File.join(seed_dir, "release.tgz")
    File.binwrite(data, Random.new(11).bytes(6 << 20))
    torrent = File.join(allow_dir, "release.torrent")
    murder("make-torrent", data, "--tracker", "127.0.0.1:#{port}", "--private", "-o", torrent)
    hash = Murder::Torrent.load(torrent).info_hash
    eventually { stats(port).any? { |t| t["info_hash"] == hash } } # the allow-dir was re-read

    spawn_logged(SYSTEM_PYTHON, LT_TOOL, "seed", torrent, seed_dir, free_port, log: File.join(tmpdir, "seeder.log"))
    eventually(timeout: 30) { stats(port).first["seeds"] == 1 }

    dest = File.join(tmpdir, "dest")
    run!("timeout", "120", "aria2c", "--dir", dest, "--seed-time=0", "--enable-dht=false", "--enable-dht6=false",
         "--bt-enable-lpd=false", "--enable-peer-exchange=false", "--listen-port", free_port.to_s,
         "--bt-stop-timeout=60", "--summary-interval=0", "--console-log-level=warn", torrent)
    expect(FileUtils.compare_file(File.join(dest, "release.tgz"), data)).to be(true)
    expect(stats(port).first["completed"]).to eq(1) # aria2c announced `completed` to us

    status, = run_failing(MURDER_BIN, "stop", "--pidfile", pidfile)
    expect(status).to be_success
    expect(File.exist?(pidfile)).to be(false)
    expect(process_alive?(pid)).to be(false)
    status, out, err = run_failing(MURDER_BIN, "stop", "--pidfile", pidfile)
    expect([status.exitstatus, out, err]).to eq([0, "", ""]) # nothing running: quiet success
  ensure
    run_failing(MURDER_BIN, "stop", "--pidfile", pidfile) if pidfile
  end
end

RSpec.describe "murder tracker and murder stop (daemon life cycle)" do
  it "reports a taken port in the foreground and exits non-zero" do
    blocker = TCPServer.new("127.0.0.1", 0)
    status, _out, err = run_failing(MURDER_BIN, "tracker", "--bind", "127.0.0.1", "--port", blocker.addr[1],
                                    "--pidfile", File.join(tmpdir, "t.pid"), "--daemon")
    expect(status.exitstatus).to eq(1)
    expect(err).to match(/\Amurder: bind 127\.0\.0\.1:\d+: Address already in use/)
    expect(File.exist?(File.join(tmpdir, "t.pid"))).to be(false)
  ensure
    blocker&.close
  end

  it "removes a stale pidfile and never signals a process that reused the pid" do
    pidfile = File.join(tmpdir, "stale.pid")
    sleeper = spawn_logged("sleep", "30", log: File::NULL)
    File.write(pidfile, "#{sleeper} 1\n") # right pid, wrong start time
    status, = run_failing(MURDER_BIN, "stop", "--pidfile", pidfile)
    expect(status).to be_success
    expect(File.exist?(pidfile)).to be(false)
    expect(Process.kill(0, sleeper)).to eq(1) # still alive
    File.write(pidfile, "garbage")
    expect(run_failing(MURDER_BIN, "stop", "--pidfile", pidfile).first).to be_success
    expect(File.exist?(pidfile)).to be(false)
  end

  # One process per pidfile: a second daemon overwrote the pidfile, and
  # `murder stop` then stopped only the second, leaving the first running
  # with no way to find it.
  # On a fixed port too (the earlier tracker holds the port: the new one
  # bound before it took the pidfile over, and failed "Address in use").
  it "takes a pidfile over from an earlier daemon that still holds it" do
    pidfile = File.join(tmpdir, "t.pid")
    port = free_port
    start = lambda do
      run!(MURDER_BIN, "tracker", "--bind", "127.0.0.1", "--port", port.to_s, "--pidfile", pidfile, "--daemon")
    end
    start.call
    first = File.read(pidfile).to_i
    start.call
    second = File.read(pidfile).to_i
    expect(second).not_to eq(first)
    expect(process_alive?(first)).to be(false)
    run!(MURDER_BIN, "stop", "--pidfile", pidfile)
    expect(process_alive?(second)).to be(false)
  ensure
    [first, second].compact.each { |pid| Process.kill("KILL", pid) if process_alive?(pid) }
  end

  # `murder stop` removed the pidfile by path once its process was gone,
  # even when a newer process had taken the pidfile over meanwhile: that
  # one then ran with no pidfile, unseen by the next `murder stop`.
  it "leaves a pidfile that a newer process wrote while it stopped the old one" do
    pidfile = File.join(tmpdir, "p.pid")
    record = ->(pid) { "#{pid} #{File.read("/proc/#{pid}/stat").split(')').last.split[19]}\n" }
    termed = File.join(tmpdir, "termed")
    # Outlives SIGTERM, and says when it got it.
    stubborn = spawn_logged("sh", "-c", "trap 'touch #{termed}' TERM; while :; do sleep 0.05; done", log: File::NULL)
    newer = spawn_logged("sleep", "30", log: File::NULL)
    sleep 0.1
    File.write(pidfile, record.call(stubborn))
    stopper = Thread.new { run!(MURDER_BIN, "stop", "--pidfile", pidfile, "--timeout", "1") }
    eventually(timeout: 10) { File.exist?(termed) } # murder stop read the pidfile and signalled
    File.write(pidfile, record.call(newer))
    stopper.join
    expect(process_alive?(stubborn)).to be(false)
    expect(File.exist?(pidfile) && File.read(pidfile)).to eq(record.call(newer))
  end

  # `murder stop` ignored kill(2)'s answer: for a process it may not
  # signal it waited, said "killed", exited 0 and removed the pidfile.
  it "fails and keeps the pidfile when it may not stop the process" do
    raise "bin/test runs as root with setpriv (to run murder stop as another user)" unless Process.uid.zero? && system("which setpriv >/dev/null")
    dir = Dir.mktmpdir("murder-stop-")
    File.chmod(0o777, dir)
    sleeper = spawn_logged("sleep", "30", log: File::NULL)
    started = File.read("/proc/#{sleeper}/stat").split(")").last.split[19]
    pidfile = File.join(dir, "root.pid")
    File.write(pidfile, "#{sleeper} #{started}\n")
    File.chmod(0o644, pidfile)
    status, _out, err = run_failing("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", MURDER_BIN, "stop",
                                    "--pidfile", pidfile, "--timeout", "1")
    expect(status.exitstatus).to eq(1)
    expect(err).to match(/pid #{sleeper} .*Operation not permitted/)
    expect(File.exist?(pidfile)).to be(true)
    expect(process_alive?(sleeper)).to be(true)
  ensure
    FileUtils.rm_rf(dir) if dir
  end

  # What fails in the background after detaching (here: the pidfile) was
  # reported as "the background process failed to start", its cause lost.
  it "names the cause when the detached process fails before it is ready" do
    pidfile = File.join(tmpdir, "no-such-dir", "t.pid")
    status, _out, err = run_failing(MURDER_BIN, "tracker", "--bind", "127.0.0.1", "--port", "0", "--pidfile", pidfile,
                                    "--daemon")
    expect(status.exitstatus).to eq(1)
    expect(err).to include("#{pidfile}: No such file or directory")
  end

  it "refuses an unknown allow-list entry with one line" do
    status, _out, err = run_failing(MURDER_BIN, "tracker", "--port", "0", "--allow", "nonsense")
    expect(status.exitstatus).to eq(1)
    expect(err).to eq("murder: nonsense: No such file or directory (os error 2)\n")
  end
end
