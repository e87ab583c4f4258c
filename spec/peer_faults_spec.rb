# frozen_string_literal: true

# `murder peer` killed half way and started again keeps what it verified, and
# its destination never holds a partial file.
RSpec.describe "murder peer under faults" do
  let(:tracker) { Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 2).start }
  after { tracker.stop }

  # A random release of `size` bytes and its torrent announcing to
  # `announce` (the spec's tracker unless given): [data, torrent].
  def release(size, seed:, announce: "127.0.0.1:#{tracker.port}", piece_length: "256K")
    data = File.join(tmpdir, "release.tgz")
    File.binwrite(data, Random.new(seed).bytes(size))
    torrent = File.join(tmpdir, "release.torrent")
    murder("make-torrent", data, "--tracker", announce, "--piece-length", piece_length, "-o", torrent)
    [data, torrent]
  end

  # A random release of `size` bytes, its torrent (256 KiB pieces) allowed
  # on the tracker, and a `murder seed` of it capped at `upload_limit`.
  def seeded_release(size, seed:, upload_limit:)
    data, torrent = release(size, seed: seed)
    tracker.allow(torrent)
    spawn_logged(MURDER_BIN, "seed", torrent, data, "--ip", "127.0.0.1", "--upload-limit", upload_limit,
                 "--progress", "none", log: File.join(tmpdir, "seed.log"))
    eventually { tracker.stats["torrents"].first["seeds"] == 1 }
    [data, torrent]
  end

  # `murder peer --wait-to-place` of `torrent` to `dest` as a deployer runs
  # it: its stdin a pipe to write orders to, its JSON reports a pipe to read.
  # @return [Array] pid, the order pipe's writing end, the reports' reading end
  def waiting_peer(torrent, dest)
    order_r, order_w = IO.pipe
    out_r, out_w = IO.pipe
    pid = Process.spawn(MURDER_BIN, "peer", torrent, dest, "--ip", "127.0.0.1", "--linger", "0",
                        "--progress", "json", "--wait-to-place",
                        in: order_r, out: out_w, err: File.join(tmpdir, "peer.log"))
    order_r.close
    out_w.close
    [pid, order_w, out_r]
  end

  # Waits up to 3 s for `pid` to exit, saying `what` if it does not.
  # @return [Process::Status]
  def exit_within_3s(pid, what)
    waited = Thread.new { Process.wait2(pid) }
    return waited.value.last if waited.join(3)

    Process.kill("KILL", pid)
    raise "murder peer still running 3 s after #{what}"
  end

  it "resumes after SIGKILL without fetching verified pieces again, never exposing a partial file" do
    size = 16 << 20
    data, torrent = seeded_release(size, seed: 5, upload_limit: "4M")

    dest = File.join(tmpdir, "host/release.tgz")
    partial_seen = false
    watcher = Thread.new do
      until Thread.current[:stop]
        partial_seen ||= File.exist?(dest) && !FileUtils.compare_file(dest, data)
        sleep 0.005
      end
    end
    peer = ->(&on_line) do
      IO.popen([MURDER_BIN, "peer", torrent, dest, "--ip", "127.0.0.1", "--linger", "0", "--progress", "json",
                { err: File.join(tmpdir, "peer.log") }], pgroup: true) do |io|
        io.each_line { |line| on_line.call(JSON.parse(line), io.pid) }
      end
    end

    done_at_kill = nil
    peer.call do |event, pid|
      next unless event["event"] == "progress" && event["bytes_done"] >= size / 2 && done_at_kill.nil?

      done_at_kill = event["bytes_done"]
      Process.kill("KILL", pid)
    end
    expect(done_at_kill).to be_between(size / 2, size - 1)
    expect(File.exist?(dest)).to be(false)
    expect(File.size(staging(dest))).to eq(size) # preallocated staging file

    summary = nil
    peer.call { |event, _| summary = event if event["event"] == "complete" }
    watcher[:stop] = true
    watcher.join
    expect(summary).not_to be_nil
    expect(FileUtils.compare_file(dest, data)).to be(true)
    expect(File.exist?(staging(dest))).to be(false)
    expect(partial_seen).to be(false)
    # Only what was not verified before the kill comes again (a little slack
    # for blocks in flight and endgame duplicates).
    expect(summary["downloaded"]).to be <= size - done_at_kill + 2 * 256 * 1024
    # What the host paid for it (16 MiB hashed and written: more than nothing,
    # less than the run took on two cores).
    expect(summary["cpu_seconds"]).to be_a(Float).and be_positive
    expect(summary["cpu_seconds"]).to be < 2 * summary["seconds"] + 1
  end

  it "goes on and places its download when the reader of its reports goes away" do
    data, torrent = seeded_release(8 << 20, seed: 6, upload_limit: "2M")

    dest = File.join(tmpdir, "host/release.tgz")
    err = File.join(tmpdir, "peer.err")
    reader, writer = IO.pipe
    pid = Process.spawn(MURDER_BIN, "peer", torrent, dest, "--ip", "127.0.0.1", "--linger", "0",
                        "--progress", "json", out: writer, err: err)
    writer.close
    first = JSON.parse(reader.gets)
    expect(first["event"]).to eq("progress")
    reader.close # the deployer went away; the next report meets a closed pipe
    _, status = Process.wait2(pid)
    expect(File.read(err)).not_to include("panicked")
    expect(status.exitstatus).to eq(0)
    expect(FileUtils.compare_file(dest, data)).to be(true)
  end

  # `--wait-to-place` waits for the deployer's order on stdin; a stop
  # signal then was caught and ignored, so Ctrl-C did nothing and `murder
  # stop` always waited out its timeout.
  it "stops at once on SIGTERM while it waits for the order to place, leaving the release staged" do
    data, torrent = seeded_release(1 << 20, seed: 7, upload_limit: "8M")
    dest = File.join(tmpdir, "host/release.tgz")
    pid, order_w, out_r = waiting_peer(torrent, dest) # the order is never given
    staged = out_r.each_line.lazy.map { |line| JSON.parse(line) }.find { |event| event["event"] == "staged" }
    expect(staged).not_to be_nil
    Process.kill("TERM", pid)
    expect(exit_within_3s(pid, "SIGTERM while waiting to place").exitstatus).not_to eq(0)
    order_w.close
    out_r.close
    expect(File.read(File.join(tmpdir, "peer.log"))).to include("interrupted while waiting to place")
    expect(File.exist?(dest)).to be(false)
    expect(FileUtils.compare_file(staging(dest), data)).to be(true)
  end

  # `--wait-to-place` read the deployer's stdin only once staged: a deployer
  # whose own seed failed could not stop its hosts, which each waited out
  # the stall timeout (10 s) before failing.
  it "stops at once when the deployer says abort while it downloads, keeping what it verified" do
    _data, torrent = seeded_release(4 << 20, seed: 12, upload_limit: "256K")
    dest = File.join(tmpdir, "host/release.tgz")
    pid, order_w, out_r = waiting_peer(torrent, dest)
    # Once it has some of the release: it is in the swarm.
    going = Timeout.timeout(30) do
      out_r.each_line.lazy.map { |line| JSON.parse(line) }.find { |e| e["bytes_done"].to_i.positive? }
    end
    expect(going).not_to be_nil
    order_w.write("abort\n")
    order_w.flush
    expect(exit_within_3s(pid, "the deployer said abort").exitstatus).to eq(1)
    order_w.close
    out_r.close
    expect(File.read(File.join(tmpdir, "peer.log"))).to include("aborted by the deployer")
    expect(File.exist?(dest)).to be(false)
    expect(File.size?(staging(dest))).to be_truthy
  end

  # Rule S1 (every task ends on cancellation): the announcer's lookup of
  # the tracker's host name ran the resolver's whole timeout before a stop
  # took effect. The peer runs in a network namespace whose only name server
  # (on its loopback) reads every query and answers none.
  it "stops at once on SIGTERM while the tracker's host name is being resolved" do
    raise "bin/test runs as root with unshare (a network namespace)" unless Process.uid.zero? && system("which unshare >/dev/null")
    _data, torrent = release(100_000, seed: 8, announce: "tracker.murder-spec.example:8998")
    resolv = File.join(tmpdir, "resolv.conf")
    File.write(resolv, "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n")
    silent = File.join(tmpdir, "silent-dns.pid")
    script = <<~'SH'
      ip link set lo up && mount --bind "$1" /etc/resolv.conf || exit 99
      python3 -c 'import socket, sys, time
      s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 53))
      open(sys.argv[1], "w").write("bound"); s.recvfrom(512)
      open(sys.argv[2], "w").write("asked"); time.sleep(30)' "$2.bound" "$2.asked" &
      echo $! > "$2"
      until [ -s "$2.bound" ]; do sleep 0.05; done
      exec "$3" peer "$4" "$5" --linger 0 --progress none
    SH
    dest = File.join(tmpdir, "host/release.tgz")
    pid = Process.spawn("unshare", "--net", "--mount", "sh", "-c", script, "sh", resolv, silent, MURDER_BIN, torrent,
                        dest, err: File.join(tmpdir, "peer.log"))
    # The announcer's lookup reached the name server, which never answers.
    eventually(timeout: 10) { File.exist?("#{silent}.asked") }
    expect(process_alive?(pid)).to be(true), File.read(File.join(tmpdir, "peer.log"))
    Process.kill("TERM", pid)
    waited = Thread.new { Process.wait2(pid) }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    unless waited.join(10)
      Process.kill("KILL", pid)
      raise "murder peer still running 10 s after SIGTERM"
    end
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    expect(took).to be < 2.5, "SIGTERM took #{took.round(1)} s to end murder peer while it resolved the tracker"
    expect(File.exist?(dest)).to be(false)
  ensure
    sink = File.exist?(silent.to_s) && File.read(silent).to_i
    Process.kill("KILL", sink) if sink&.positive? && process_alive?(sink)
  end

  # Rule W1 (a failed read fails the session), and the owner of a failed
  # seed ends it: `murder seed` whose data was cut short kept running,
  # serving nothing, and exited 0 on SIGTERM.
  it "ends murder seed with an error naming the file when its data can no longer be read" do
    data, torrent = release(4 << 20, seed: 9)
    tracker.allow(torrent)
    seed_log = File.join(tmpdir, "seed.log")
    seed = spawn_logged(MURDER_BIN, "seed", torrent, data, "--ip", "127.0.0.1", "--progress", "none", log: seed_log)
    eventually { tracker.stats["torrents"].first["seeds"] == 1 }
    File.truncate(data, 1000)
    spawn_logged(MURDER_BIN, "peer", torrent, File.join(tmpdir, "host/release.tgz"), "--ip", "127.0.0.1",
                 "--linger", "0", "--progress", "none", log: File.join(tmpdir, "peer.log"))
    waited = Thread.new { Process.wait2(seed) }
    raise "murder seed still running 15 s after its data was cut short" unless waited.join(15)

    expect(waited.value.last.exitstatus).to eq(1)
    expect(File.read(seed_log)).to match(/murder: .*release\.tgz/)
  end

  # A deploy run again finds the release at DEST already: --wait-to-place
  # reported a staging area that did not exist, and the order to place
  # then failed with "a seed has nothing to place".
  it "waits for the order and succeeds when DEST holds the release already (--wait-to-place)" do
    data, torrent = release(300_000, seed: 10, piece_length: "32K")
    out, err, status = Open3.capture3(MURDER_BIN, "peer", torrent, data, "--ip", "127.0.0.1", "--linger", "0",
                                      "--progress", "json", "--wait-to-place", stdin_data: "place\n", chdir: tmpdir)
    expect(status.exitstatus).to eq(0), err
    events = out.lines.map { |line| JSON.parse(line) }
    expect(events.find { |e| e["event"] == "staged" }).to include("path" => data)
    expect(File.size(data)).to eq(300_000)
    expect(File.exist?(staging(data))).to be(false)
    _out, err, status = Open3.capture3(MURDER_BIN, "peer", torrent, data, "--ip", "127.0.0.1", "--linger", "0",
                                       "--progress", "none", "--wait-to-place", stdin_data: "abort\n", chdir: tmpdir)
    expect(status.exitstatus).to eq(1)
    expect(err).to include("not placed: it was there before this run, and stays at #{data}")
    expect(File.size(data)).to eq(300_000)
  end

  # With --linger, `murder peer` forks: the child works, the parent waits
  # for its word. A SIGTERM to the parent (the pid a tool started) killed
  # the parent alone, and the child downloaded, placed and lingered on.
  it "passes a SIGTERM to the pid it was started as on to the process doing the work" do
    _data, torrent = seeded_release(4 << 20, seed: 11, upload_limit: "1M")
    dest = File.join(tmpdir, "host/release.tgz")
    pidfile = File.join(tmpdir, "peer.pid")
    parent = Process.spawn(MURDER_BIN, "peer", torrent, dest, "--ip", "127.0.0.1", "--linger", "30", "--progress",
                           "none", "--pidfile", pidfile, err: File.join(tmpdir, "peer.log"))
    eventually { File.exist?(pidfile) }
    worker = File.read(pidfile).to_i
    expect(worker).not_to eq(parent)
    Process.kill("TERM", parent)
    waited = Thread.new { Process.wait2(parent) }
    raise "the parent did not exit within 5 s of SIGTERM" unless waited.join(5)

    eventually(timeout: 5) { !process_alive?(worker) }
    expect(waited.value.last.exitstatus).to eq(1) # the worker's: interrupted
    expect(File.exist?(dest)).to be(false)
  ensure
    Process.kill("KILL", worker) if worker && process_alive?(worker)
  end

  it "seeds a tree of more files than it may hold open (a low descriptor limit)" do
    tree = sample_tree("release-many", files: 300)
    torrent = File.join(tmpdir, "many.torrent")
    murder("make-torrent", tree, "--align", "--tracker", "127.0.0.1:#{tracker.port}", "-o", torrent)
    tracker.allow(torrent)
    # 200 descriptors, soft and hard: the seed may keep at most 100 of its
    # 300 files open, and must reopen the others as they are asked for.
    spawn_logged("bash", "-c", 'ulimit -n 200 && exec "$@"', "bash", MURDER_BIN, "seed", torrent, tree,
                 "--ip", "127.0.0.1", "--bind", "127.0.0.1", "--progress", "none", log: File.join(tmpdir, "seed.log"))
    eventually { tracker.stats["torrents"].first["seeds"] == 1 }
    dest = File.join(tmpdir, "host/release-many")
    out, status = Open3.capture2e(MURDER_BIN, "peer", torrent, dest, "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                                  "--linger", "0", "--progress", "none")
    expect(status).to be_success, "#{out}\nseed: #{File.read(File.join(tmpdir, "seed.log"))}"
    expect(system("diff", "-r", tree, dest)).to be(true)
  end

  it "refuses a destination that holds other data and leaves it untouched" do
    _data, torrent = release(300_000, seed: 6, piece_length: "32K")
    dest = File.join(tmpdir, "other.tgz")
    File.write(dest, "precious")
    status, _out, err = run_failing(MURDER_BIN, "peer", torrent, dest, "--linger", "0")
    expect(status.exitstatus).to eq(1)
    expect(err).to match(/other\.tgz: already exists and is not this torrent's data/)
    expect(File.read(dest)).to eq("precious")
    expect(File.exist?(staging(dest))).to be(false)
  end

  it "names a destination it cannot read instead of calling it other data" do
    data, torrent = release(300_000, seed: 6, piece_length: "32K")
    # The torrent's own data, but unreadable to the peer: as root (who reads
    # anything), the peer runs as nobody, from a copy of the binary it may run.
    FileUtils.chmod(0o711, tmpdir)
    FileUtils.chmod(0o644, torrent)
    binary = File.join(tmpdir, "murder")
    FileUtils.cp(MURDER_BIN, binary)
    dest = File.join(tmpdir, "unreadable.tgz")
    FileUtils.cp(data, dest)
    FileUtils.chmod(0o000, dest)
    as_nobody = Process.uid.zero? ? %w[setpriv --reuid=65534 --regid=65534 --clear-groups] : []
    status, _out, err = run_failing(*as_nobody, binary, "peer", torrent, dest, "--linger", "0")
    expect(status.exitstatus).to eq(1)
    expect(err).to match(/unreadable\.tgz: Permission denied/)
    expect(err).not_to match(/not this torrent's data/)
    FileUtils.chmod(0o644, dest)
    expect(File.binread(dest)).to eq(File.binread(data))
  end
end

RSpec.describe "murder peer --linger" do
  it "exits 0 once the data is verified and keeps seeding in the background until the linger ends" do
    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1).start
    data = File.join(tmpdir, "release.tgz")
    File.binwrite(data, Random.new(8).bytes(2_000_000))
    torrent = File.join(tmpdir, "release.torrent")
    murder("make-torrent", data, "--tracker", "127.0.0.1:#{tracker.port}", "-o", torrent)
    tracker.allow(torrent)
    spawn_logged(MURDER_BIN, "seed", torrent, data, "--ip", "127.0.0.1", "--progress", "none",
                 log: File.join(tmpdir, "seed.log"))
    eventually { tracker.stats["torrents"].first["seeds"] == 1 }

    pidfile = File.join(tmpdir, "peer.pid")
    dest = File.join(tmpdir, "host/release.tgz")
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out = murder("peer", torrent, dest, "--ip", "127.0.0.1", "--linger", "10", "--pidfile", pidfile)
    returned = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    expect(out).to match(/release\.tgz: 1\.9 MiB in [\d.]+ s/)
    expect(returned).to be < 10 # it did not stay for its linger
    expect(FileUtils.compare_file(dest, data)).to be(true)
    lingering = Integer(File.read(pidfile).split.first)
    expect(process_alive?(lingering)).to be(true)
    eventually { tracker.stats["torrents"].first["seeds"] == 2 } # the finished host seeds
    eventually(timeout: 20) { !process_alive?(lingering) }       # and leaves by itself
    expect(File.exist?(pidfile)).to be(false)
  ensure
    tracker&.stop
  end
end
