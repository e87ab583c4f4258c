# frozen_string_literal: true

# Murder::RakeTask in a project without Capistrano: a Rakefile that ships a
# directory to 4 farm hosts over net-ssh, twice (the second reusing the
# first), and the scripting tasks. Needs root (the farm).
RSpec.describe "Murder::RakeTask on a farm of hosts", order: :defined do
  FARM_R = "/var/tmp/murder-farm-rake"
  HOSTS_R = 4

  before(:all) do
    out, status = Open3.capture2e({ "FARM_DIR" => FARM_R }, File.join(ROOT, "bin/farm"), "up", HOSTS_R.to_s)
    raise "farm up failed:\n#{out}" unless status.success?

    @project = Dir.mktmpdir("murder-rake-")
    build = File.join(@project, "build")
    FileUtils.mkdir_p(File.join(build, "bin"))
    File.write(File.join(build, "bin/run"), "#!/bin/sh\necho run\n")
    File.chmod(0o755, File.join(build, "bin/run"))
    File.binwrite(File.join(build, "data.bin"), Random.new(9).bytes(800_000))
    FileUtils.mkdir_p(File.join(build, "log")) # empty: the hosts make it too
    # A build kept in git: the repository is not part of the release.
    FileUtils.mkdir_p(File.join(build, ".git/refs"))
    File.write(File.join(build, ".git/HEAD"), "ref: refs/heads/main\n")
    File.write(File.join(@project, "Rakefile"), <<~RUBY)
      require "murder/rake_task"

      Murder::RakeTask.new(:ship) do |t|
        t.source = "build"
        t.hosts = (1..#{HOSTS_R}).map { |i| "root@10.250.0.\#{10 + i}" }
        t.destination = "/srv/app/releases/%{tag}"
        t.tag = ENV["TAG"]
        t.linger = 2
        t.remote_binary = "/srv/app/murder/murder"
        t.binary = ENV.fetch("SHIP_BINARY", "#{MURDER_BIN}")
        t.ip = ENV["SHIP_IP"] if ENV["SHIP_IP"]
        t.seed_port = Integer(ENV["SHIP_SEED_PORT"]) if ENV["SHIP_SEED_PORT"]
        t.relay = ENV["SHIP_RELAY"] if ENV["SHIP_RELAY"]
        t.ssh_options = { keys: ["#{FARM_R}/id_ed25519"], keys_only: true, auth_methods: ["publickey"],
                          user_known_hosts_file: "#{FARM_R}/known_hosts", verify_host_key: :always, timeout: 5 }
      end
    RUBY
  end

  after(:all) do
    Open3.capture2e({ "FARM_DIR" => FARM_R }, File.join(ROOT, "bin/farm"), "down")
    FileUtils.rm_rf(@project) if @project
  end

  def rake(*args, env: {})
    Open3.capture2e({ "RUBYLIB" => File.join(ROOT, "lib") }.merge(env), "rake", "-f", File.join(@project, "Rakefile"),
                    *args, chdir: @project)
  end

  def host_path(i, path) = File.join(FARM_R, "hosts/h#{i}", path.sub(%r{\A/}, ""))

  it "describes its tasks" do
    out, status = rake("-T")
    expect(status).to be_success, out
    expect(out).to match(/^rake ship\s+# Ship build to 4 hosts through murder/)
    expect(out).to match(/^rake murder:torrent\[path,tracker\]/)
    expect(out).to match(/^rake murder:tracker\[port,dir\]/)
  end

  it "ships the build to every host, then ships the next one reusing it" do
    out, status = rake("ship", env: { "TAG" => "r1" })
    expect(status).to be_success, out
    expect(out.scan(/murder:   root@10\.250\.0\.\d+: 0 B reused/).size).to eq(HOSTS_R), out
    (1..HOSTS_R).each do |i|
      dir = host_path(i, "/srv/app/releases/r1")
      expect(File.binread(File.join(dir, "data.bin"))).to eq(File.binread(File.join(@project, "build/data.bin")))
      expect(File.executable?(File.join(dir, "bin/run"))).to be(true)
      expect(Dir.empty?(File.join(dir, "log"))).to be(true)
      expect(File.exist?(File.join(dir, ".git"))).to be(false) # exclude's default
    end
    File.write(File.join(@project, "build/VERSION"), "two\n")
    # Every host kept the torrent as the next ticket's base; host 1 loses it.
    bases = (1..HOSTS_R).map { |i| host_path(i, "/srv/app/releases/.murder-ticket-base.torrent") }
    expect(bases.map { |b| File.size?(b) }).to all(be_positive)
    File.delete(bases.first)
    out, status = rake("ship", env: { "TAG" => "r2" })
    expect(status).to be_success, out
    # The others took the difference from it, host 1 the whole torrent.
    expect(out).to match(/deploy ticket [\d.]+ \S+ to #{HOSTS_R - 1} hosts \(the difference from the last ship's torrent\), [\d.]+ \S+ to 1$/)
    expect(bases.map { |b| File.binread(b) }.uniq.size).to eq(1)
    # Only the piece holding VERSION crosses the wire; in endgame the same
    # 4-byte block may come from two senders, so allow under one piece.
    fetched = out.scan(/murder:   root@10\.250\.0\.\d+: 781\.\d KiB reused, (\d+) B downloaded/).flatten.map(&:to_i)
    expect(fetched.size).to eq(HOSTS_R), out
    expect(fetched).to all(be_between(4, 16 * 1024 - 1)), out
    (1..HOSTS_R).each do |i|
      expect(File.read(host_path(i, "/srv/app/releases/r2/VERSION"))).to eq("two\n")
      expect(Dir.empty?(host_path(i, "/srv/app/releases/r2/log"))).to be(true)
    end
  end

  # No host may open a connection to this machine (each host's routing
  # refuses every packet to it but its sshd's answers): the ship goes
  # through the relay on host 1 (RakeTask#relay), which gets the binary
  # first (it has another).
  it "ships through the relay on a host when no host can connect to this machine" do
    rules = [%w[priority 100 to 10.250.0.1 ipproto tcp sport 22 lookup main], %w[priority 101 to 10.250.0.1 prohibit]]
    (1..HOSTS_R).each { |i| rules.each { |r| system("ip", "-n", "mfh#{i}", "rule", "add", *r, exception: true) } }
    File.write(host_path(1, "/srv/app/murder/murder.sha256"), "0" * 64)
    File.write(File.join(@project, "build/VERSION"), "relayed\n")
    out, status = rake("ship", env: { "TAG" => "relayed", "SHIP_RELAY" => "root@10.250.0.11" })
    expect(status).to be_success, out
    (1..HOSTS_R).each do |i|
      expect(File.read(host_path(i, "/srv/app/releases/relayed/VERSION"))).to eq("relayed\n")
      expect(File.binread(host_path(i, "/srv/app/releases/relayed/data.bin")))
        .to eq(File.binread(File.join(@project, "build/data.bin")))
    end
  ensure
    (1..HOSTS_R).each { |i| rules.each { |r| system("ip", "-n", "mfh#{i}", "rule", "del", *r, err: File::NULL) } }
  end

  it "refuses a tag that would leave the destination's directory, touching no host" do
    before = Dir.glob("**/*", File::FNM_DOTMATCH, base: host_path(1, "/srv")).sort
    out, status = rake("ship", env: { "TAG" => "../.." })
    expect(status).not_to be_success
    expect(out).to include('ship: tag "../.." is not allowed')
    expect(Dir.glob("**/*", File::FNM_DOTMATCH, base: host_path(1, "/srv")).sort).to eq(before)
  end

  it "fails naming a host it cannot reach" do
    rakefile = File.join(@project, "Rakefile")
    four_hosts = File.read(rakefile)
    File.write(rakefile, four_hosts.sub("(1..#{HOSTS_R})", "(1..#{HOSTS_R + 1})"))
    out, status = rake("ship", env: { "TAG" => "r3" })
    expect(status).not_to be_success
    expect(out).to match(/murder: failed on root@10\.250\.0\.15: /)
  ensure
    # The later examples expect the four hosts that answer, not an unreachable fifth.
    File.write(rakefile, four_hosts) if four_hosts
  end

  # A host that stops answering (its link down) once its murder peer has
  # started: net-ssh sends nothing on a channel that waits for output, so
  # the ship waited for that host for ever.
  # Hosts that cannot reach this machine (here: the address the torrent
  # names is nobody's) waited out the 60 s stall timeout (rule A1), and the
  # error did not say what to open.
  it "fails in seconds when the hosts cannot reach this machine's tracker, naming the ports to open" do
    # Bytes no host holds yet: a build the hosts' earlier releases hold
    # whole is placed from them alone, with no peer needed.
    extra = File.join(@project, "build/unreachable.bin")
    File.binwrite(extra, Random.new(10).bytes(100_000))
    out, status = rake("ship", env: { "TAG" => "r10", "SHIP_IP" => "10.250.0.99", "SHIP_SEED_PORT" => "18996" })
    expect(status).not_to be_success
    expect(out).to match(%r{failed on root@10\.250\.0\.\d+: murder: .*no tracker answered in 15 s and no peer connected: tracker http://10\.250\.0\.99:\d+/announce}), out
    expect(out).to match(/\(the hosts must reach this machine on TCP ports \d+ \(the tracker\) and 18996 \(the seed\): open them, or set ip, port and seed_port\)/), out
    (1..HOSTS_R).each { |i| expect(File.exist?(host_path(i, "/srv/app/releases/r10"))).to be(false) }
  ensure
    FileUtils.rm_f(extra) if extra
  end

  # Slows what h3 receives to 1 Mbit/s, so that a ship is still downloading
  # there while an example acts: on h3's bridge side of the link (a qdisc on
  # h3's eth0 slows only what h3 sends, and h3 then finished now and then
  # before the example acted). The murder binary (64 MB) goes to every host
  # first, unslowed, when no earlier example installed it.
  def slow_into_h3
    unless File.exist?(host_path(3, "/srv/app/murder/murder"))
      out, status = rake("ship", env: { "TAG" => "binary" })
      expect(status).to be_success, out
    end
    system("tc", "qdisc", "replace", "dev", "mfh3-br", "root", "tbf", "rate", "1mbit", "burst", "32kbit",
           "latency", "400ms", exception: true)
  end

  # Undoes slow_into_h3 (quietly when it never got so far).
  def unslow_h3 = system("tc", "qdisc", "del", "dev", "mfh3-br", "root", err: File::NULL)

  it "fails naming a host that stops answering, within seconds" do
    in_h3 = ->(*cmd) { system("ip", "netns", "exec", "mfh3", *cmd, exception: true) }
    # Slow, so that h3 is still downloading when its link goes.
    slow_into_h3
    File.binwrite(File.join(@project, "build/silent.bin"), Random.new(5).bytes(1_000_000))
    out = +""
    Open3.popen2e({ "RUBYLIB" => File.join(ROOT, "lib"), "TAG" => "r5" }, "rake", "-f",
                  File.join(@project, "Rakefile"), "ship", chdir: @project, pgroup: true) do |stdin, io, waiter|
      stdin.close
      reader = Thread.new { out << io.read }
      sleep 0.01 until File.exist?(host_path(3, "/srv/app/releases/.r5.part")) || !waiter.alive?
      in_h3.call("ip", "link", "set", "eth0", "down")
      unless waiter.join(100)
        Process.kill("KILL", -waiter.pid)
        raise "rake ship still running after 100 s:\n#{out}"
      end
      reader.join
      expect(waiter.value).not_to be_success
    end
    expect(out).to match(/murder: failed on root@10\.250\.0\.13: .*not responding/), out
  ensure
    in_h3.call("ip", "link", "set", "eth0", "up")
    unslow_h3
    FileUtils.rm_f(File.join(@project, "build/silent.bin"))
    # h3's murder peer ends on its own (stall timeout) once it is alone.
    eventually(timeout: 90) { `ps -eo args=`.lines.grep(%r{/srv/app/murder/murder (seed|peer)}).empty? }
  end

  # Ships TAG with h3's link slowed, and once h3 has started downloading,
  # SIGKILLs the process of h3 that the block picks from the command lines
  # of h3's network namespace ({pid => argv}). Returns the output and status.
  def ship_killing_in_h3(tag)
    slow_into_h3
    extra = File.join(@project, "build/#{tag}.bin")
    File.binwrite(extra, Random.new(tag.sum).bytes(1_000_000))
    Open3.popen2e({ "RUBYLIB" => File.join(ROOT, "lib"), "TAG" => tag }, "rake", "-f",
                  File.join(@project, "Rakefile"), "ship", chdir: @project) do |stdin, io, waiter|
      stdin.close
      reader = Thread.new { io.read }
      sleep 0.01 until File.exist?(host_path(3, "/srv/app/releases/.#{tag}.part")) || !waiter.alive?
      # The staging directory can appear before murder forks its worker:
      # look again until the block finds its process.
      argv = victim = nil
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 20
      loop do
        argv = `ip netns pids mfh3`.split.to_h do |pid|
          [pid.to_i, (File.read("/proc/#{pid}/cmdline").split("\0") rescue [])]
        end
        victim = (yield(argv) rescue nil)
        break if victim || !waiter.alive? || Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        sleep 0.05
      end
      # When the ship ended first, what it said tells why (seen once: the
      # foreground murder gone and the worker left, with no remote shell).
      said = waiter.alive? ? "" : "; the ship ended first (#{waiter.value}) and said:\n#{reader.value}"
      expect(victim).not_to be_nil, "h3's processes: #{argv}#{said}"
      Process.kill("KILL", victim)
      [reader.value, waiter.value]
    end
  ensure
    unslow_h3
    FileUtils.rm_f(extra) if extra
    eventually(timeout: 90) { `ps -eo args=`.lines.grep(%r{/srv/app/murder/murder (seed|peer)}).empty? }
  end

  # A host's murder killed (the OOM killer, an operator: the worker that
  # holds the download) said nothing, and its waiting parent exited 1: the
  # ship named the prompt for the ticket as the host's failure, "murder:
  # reading the deploy ticket from standard input".
  it "names a host whose murder was killed by the signal that killed it" do
    out, status = ship_killing_in_h3("r7") do |argv|
      # This ship's `murder peer - DEST`: the foreground process and the
      # worker it forked.
      peers = argv.select { |_, args| args.first(4) == ["/srv/app/murder/murder", "peer", "-", "/srv/app/releases/r7"] }
      parent = ->(pid) { File.read("/proc/#{pid}/status")[/^PPid:\s+(\d+)/, 1].to_i }
      peers.keys.find { |pid| peers.key?(parent.call(pid)) }
    end
    expect(status).not_to be_success
    expect(out).to match(/murder: failed on root@10\.250\.0\.13: murder: killed by signal 9 \(Killed\)/), out
  end

  # The remote shell that runs murder killed by a signal: SSH then sends
  # `exit-signal`, not an exit status, and the ship named the host by what
  # its orphaned murder said last ("not placed: the verified release stays
  # staged"), not by what happened.
  it "names a host whose remote shell was killed by the signal that killed it" do
    out, status = ship_killing_in_h3("r9") do |argv|
      # `sh -c SCRIPT murder-peer MURDER SHA RELEASES KEEP DEST …`
      argv.find { |_, args| args[0] == "sh" && args[3] == "murder-peer" && args.include?("/srv/app/releases/r9") }&.first
    end
    expect(status).not_to be_success
    expect(out).to match(/failed on root@10\.250\.0\.13: murder: the remote shell running murder was killed by SIGKILL/), out
  end

  # A binary of another CPU (as the kernel sees it: the real one, its ELF
  # header naming aarch64) replaced each host's murder and failed there
  # with "Exec format error".
  it "installs no binary the hosts cannot run, and names what they are" do
    arm = File.join(@project, "murder-aarch64")
    FileUtils.cp(MURDER_BIN, arm)
    File.open(arm, "r+b") { |f| f.pwrite([183].pack("v"), 18) }
    sha256 = host_path(1, "/srv/app/murder/murder.sha256")
    installed = File.exist?(sha256) && File.read(sha256)
    out, status = rake("ship", env: { "TAG" => "r8", "SHIP_BINARY" => arm })
    expect(status).not_to be_success
    expect(out).to include("failed on root@10.250.0.11: the murder binary #{arm} is built for Linux aarch64, " \
                           "and root@10.250.0.11 is Linux x86_64: set the task's binary (or MURDER_BINARY) to a murder built for them"), out
    expect(File.exist?(sha256) && File.read(sha256)).to eq(installed)
    expect(File.exist?(host_path(1, "/srv/app/releases/r8"))).to be(false)
  ensure
    FileUtils.rm_f(arm)
  end

  # A library caller's exception (a Timeout, Ctrl-C) while a host still
  # downloads: ship stopped its seed and raised, but its thread per host
  # went on, holding that host's SSH session, free to place the release.
  it "ends every host's thread when the ship is interrupted" do
    # Slow into h2 (its bridge side of the link): it is still downloading.
    system("tc", "qdisc", "replace", "dev", "mfh2-br", "root", "tbf", "rate", "2mbit", "burst", "32kbit",
           "latency", "400ms", exception: true)
    File.binwrite(File.join(@project, "build/slow.bin"), Random.new(6).bytes(2_000_000))
    rakefile = File.join(@project, "Rakefile")
    original = File.read(rakefile)
    File.write(rakefile, original + <<~RUBY)
      task :interrupted do
        main = Thread.current
        before = Thread.list.size
        Thread.new do
          sleep 0.01 until File.exist?("#{host_path(2, '/srv/app/releases/.r6.part')}")
          sleep 0.5
          main.raise(Interrupt)
        end
        begin
          Rake::Task[:ship].invoke
          puts "shipped"
        rescue Interrupt
          sleep 1
          puts "left running: \#{Thread.list.count(&:alive?) - before}"
        end
      end
    RUBY
    out, = rake("interrupted", env: { "TAG" => "r6" })
    expect(out).to include("left running: 0")
    expect(File.exist?(host_path(2, "/srv/app/releases/r6"))).to be(false)
  ensure
    File.write(rakefile, original) if original
    FileUtils.rm_f(File.join(@project, "build/slow.bin"))
    system("tc", "qdisc", "del", "dev", "mfh2-br", "root")
    eventually(timeout: 90) { `ps -eo args=`.lines.grep(%r{/srv/app/murder/murder (seed|peer)}).empty? }
  end

  # The seed on this machine failed (a changed file cut short once the
  # torrent was made): the hosts waited out their stall timeout (10 s) and
  # the error named only them.
  it "stops every host at once and names the seed's failure first when it fails" do
    File.write(File.join(@project, "build/VERSION"), "three\n")
    cache = File.join(@project, "tmp/murder/hashes.json")
    made = File.mtime(cache)
    cutter = Thread.new do
      sleep 0.005 until File.mtime(cache) != made
      File.truncate(File.join(@project, "build/VERSION"), 1) # changed: no host holds it
    end
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, status = rake("ship", env: { "TAG" => "r4" })
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    expect(status).not_to be_success
    expect(out).to match(/murder: the seed on this machine failed \(.*VERSION.*\); failed on root@10\.250\.0\.11: /), out
    expect(out).to include("aborted by the deployer")
    # Well within a host's stall timeout.
    expect(took).to be < 8, out
    expect((1..HOSTS_R).map { |i| File.exist?(host_path(i, "/srv/app/releases/r4")) }).to all(be(false))
  ensure
    cutter&.kill
    File.write(File.join(@project, "build/VERSION"), "three\n")
  end

  it "makes a torrent and runs a tracker for scripts" do
    out, status = rake("murder:torrent[build]")
    expect(status).to be_success, out
    expect(Murder::Torrent.load(File.join(@project, "build.torrent")).files.map(&:path)).to include("bin/run")
    port = free_port
    pid = spawn_logged("rake", "-f", File.join(@project, "Rakefile"), "murder:tracker[#{port}]",
                       log: File.join(tmpdir, "tracker.log"))
    eventually(timeout: 20) { http_get(port, "/health").body == "ok\n" rescue false }
    Process.kill("INT", -pid)
    _, status = Process.wait2(pid)
    @spawned.delete(pid)
    expect(status).to be_success
  end
end
