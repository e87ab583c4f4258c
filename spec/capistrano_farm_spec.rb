# frozen_string_literal: true

require "capistrano/murder/support"

# Twitter's Murder workflow through Capistrano on a farm of 8 real hosts
# (bin/farm: network namespaces with their own sshd and mounts). Needs root.
RSpec.describe "Capistrano murder tasks on a farm of hosts", order: :defined do
  HOSTS = 8
  # Not under /tmp, /run, /root or /srv: each host mounts its own over those.
  FARM = "/var/tmp/murder-farm-spec"
  CAP_DIR = File.join(ROOT, "spec/fixtures/farm")

  before(:all) do
    out, status = Open3.capture2e({ "FARM_DIR" => FARM }, File.join(ROOT, "bin/farm"), "up", HOSTS.to_s)
    raise "farm up failed:\n#{out}" unless status.success?

    src = host_path(1, "/srv/src")
    FileUtils.mkdir_p(File.join(src, "app/lib"))
    File.binwrite(File.join(src, "app/lib/blob.bin"), Random.new(42).bytes(3_000_000))
    File.write(File.join(src, "README"), "release\n")
    FileUtils.mkdir_p(File.join(src, ".git"))
    File.write(File.join(src, ".git/config"), "secret")
  end

  after(:all) do
    Open3.capture2e({ "FARM_DIR" => FARM }, File.join(ROOT, "bin/farm"), "down")
  end

  def self.host_path(index, path) = File.join(FARM, "hosts/h#{index}", path.sub(%r{\A/srv}, "srv").sub(%r{\A/tmp}, "tmp"))
  def host_path(index, path) = self.class.host_path(index, path)

  def cap(*args, env: {})
    full_env = { "FARM_DIR" => FARM, "FARM_SIZE" => HOSTS.to_s, "MURDER_BINARY" => MURDER_BIN,
                 "BUNDLE_GEMFILE" => File.join(ROOT, "Gemfile") }.merge(env)
    Open3.capture2e(full_env, "bundle", "exec", "cap", "farm", *args, chdir: CAP_DIR)
  end

  def cap!(*args, **opts)
    out, status = cap(*args, **opts)
    raise "cap #{args.join(' ')} failed:\n#{out}" unless status.success?

    out
  end

  def murder_processes
    `ps -eo pid=,args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)})
  end

  def expect_release(tag, root = "/srv/releases")
    expected = File.binread(host_path(1, "/srv/src/app/lib/blob.bin"))
    (1..HOSTS).each do |i|
      dir = host_path(i, "#{root}/#{tag}")
      expect(File.binread(File.join(dir, "app/lib/blob.bin"))).to eq(expected), "h#{i}"
      expect(File.read(File.join(dir, "README"))).to eq("release\n")
      expect(File.exist?(File.join(dir, ".git"))).to be(false), "h#{i} got .git"
    end
  end

  it "lists every task with a description" do
    out = cap!("-T")
    %w[distribute_files start_tracker stop_tracker create_torrent download_torrent start_seeding stop_seeding
       stop_all_seeding peer stop_peering stop_all_peering clean_temp_files distribute status].each do |task|
      expect(out).to match(/^cap murder:#{task}\s+# \S/)
    end
  end

  it "murder:distribute ships a release to every host, then leaves nothing running" do
    out = cap!("murder:distribute", "tag=v1", "files_path=/srv/src", "destination_path=/srv/releases")
    expect(out).to match(/murder: #{HOSTS} hosts received 2\.9 MiB each in [\d.]+ s; slowest \S+/)
    expect_release("v1")
    (1..HOSTS).each { |i| expect(Dir.glob(host_path(i, "/tmp/v1.tgz*"))).to be_empty }
    eventually(timeout: 15) { murder_processes.empty? } # lingering peers leave by themselves
  end

  it "runs Murder's manual flow task by task" do
    cap!("murder:distribute_files")
    cap!("murder:start_tracker")
    cap!("murder:start_tracker") # already running: fine
    cap!("murder:create_torrent", "tag=v2", "files_path=/srv/src")
    expect(File.exist?("/tmp/v2.tgz.torrent")).to be(true) # downloaded to the deployer
    cap!("murder:start_seeding", "tag=v2")
    expect(cap!("murder:status")).to match(/10\.250\.0\.11: murder installed\s+seed-v2 running.*\s+tracker running/m)
    cap!("murder:peer", "tag=v2", "destination_path=/srv/releases")
    cap!("murder:stop_seeding", "tag=v2")
    cap!("murder:stop_tracker")
    cap!("murder:stop_tracker") # nothing running: still fine
    expect_release("v2")
    eventually(timeout: 15) { murder_processes.empty? }
    cap!("murder:clean_temp_files", "tag=v2")
  ensure
    cap("murder:stop_seeding", "tag=v2")
    cap("murder:stop_tracker")
    FileUtils.rm_f("/tmp/v2.tgz.torrent")
  end

  # Rule X4 (BEP 12) through Capistrano: several `tracker` servers each run
  # a tracker, all of them are in the torrent, and a deploy survives the
  # first one being gone.
  it "runs a tracker on every tracker host and completes with the first one killed" do
    env = { "FARM_TRACKERS" => "2" }
    cap!("murder:distribute_files", env: env)
    cap!("murder:start_tracker", env: env)
    expect(cap!("murder:status", env: env)).to match(/10\.250\.0\.12: murder installed\s+tracker running/m)
    cap!("murder:create_torrent", "tag=ha1", "files_path=/srv/src", env: env)
    info = JSON.parse(`#{MURDER_BIN} info --json /tmp/ha1.tgz.torrent`)
    expect(info["announce_list"].flatten).to eq(%w[http://10.250.0.11:8998/announce http://10.250.0.12:8998/announce])
    cap!("murder:start_seeding", "tag=ha1", env: env)
    pidfile = host_path(1, "/srv/farmapp/shared/murder/run/tracker.pid")
    pid = Integer(File.read(pidfile).split.first)
    Process.kill("KILL", pid) # h1's tracker, started by this test through cap
    eventually(timeout: 5) { !File.exist?("/proc/#{pid}") }
    out = cap!("murder:peer", "tag=ha1", "destination_path=/srv/releases", env: env)
    expect(out).to match(/murder: #{HOSTS} hosts received 2\.9 MiB each/)
    expect_release("ha1")
  ensure
    cap("murder:stop_seeding", "tag=ha1", env: env)
    cap("murder:stop_tracker", env: env)
    cap("murder:clean_temp_files", "tag=ha1", env: env)
    FileUtils.rm_f("/tmp/ha1.tgz.torrent")
  end

  # A pidfile outlives its tracker (a reboot, a kill -9) and its pid may be
  # another process's by now: start_tracker took any live pid for a
  # running tracker, and skipped starting one. This test's own pid stands
  # in for the reused one (the farm's hosts share this machine's pids).
  it "starts a tracker when the pidfile names a live process that is not the tracker it recorded" do
    cap!("murder:distribute_files")
    pidfile = host_path(1, "/srv/farmapp/shared/murder/run/tracker.pid")
    FileUtils.mkdir_p(File.dirname(pidfile))
    File.write(pidfile, "#{Process.pid} 1\n")
    expect(cap!("murder:status")).to match(/10\.250\.0\.11: murder installed\s+tracker stale pidfile/m)
    cap!("murder:start_tracker")
    pid = Integer(File.read(pidfile).split.first)
    expect(pid).not_to eq(Process.pid)
    expect(File.read("/proc/#{pid}/cmdline").split("\0")).to include("tracker")
    expect(cap!("murder:status")).to match(/10\.250\.0\.11: murder installed\s+tracker running \(pid #{pid}\)/m)
  ensure
    cap("murder:stop_tracker")
  end

  it "ships a tree with tree=1: no tar, files in place, and the next tag reuses the last" do
    cap!("murder:distribute", "tag=t1", "files_path=/srv/src", "destination_path=/srv/trees", "tree=1")
    expect_release("t1", "/srv/trees")
    File.write(host_path(1, "/srv/src/README"), "release two\n")
    out = cap!("murder:distribute", "tag=t2", "files_path=/srv/src", "destination_path=/srv/trees", "tree=1")
    (1..HOSTS).each do |i|
      expect(File.read(host_path(i, "/srv/trees/t2/README"))).to eq("release two\n"), "h#{i}"
      expect(File.stat(host_path(i, "/srv/trees/t2/app/lib/blob.bin")).ino)
        .to eq(File.stat(host_path(i, "/srv/trees/t1/app/lib/blob.bin")).ino), "h#{i}: blob.bin is reused"
      expect(File.exist?(host_path(i, "/srv/trees/t2/.git"))).to be(false)
    end
    expect(out).not_to match(/\btar\b/)
    expect(out.scan(/murder:   \S+: 2\.9 MiB reused.*, [\d.]+ CPU s$/).size).to eq(HOSTS), out
    expect(out).to match(/murder used [\d.]+ CPU s on the hosts/)
  ensure
    File.write(host_path(1, "/srv/src/README"), "release\n")
  end

  # unsafe_please_delete empties an archive's destination but a tree is
  # renamed into place: its destination must go (kept, murder peer refused
  # it as "not this torrent's data").
  it "replaces an occupied tree destination with unsafe_please_delete" do
    occupied = host_path(2, "/srv/trees/t3")
    FileUtils.mkdir_p(occupied)
    File.write(File.join(occupied, "stale.txt"), "stale")
    cap!("murder:distribute", "tag=t3", "files_path=/srv/src", "destination_path=/srv/trees", "tree=1",
         "unsafe_please_delete=1")
    expect_release("t3", "/srv/trees")
    expect(File.exist?(File.join(occupied, "stale.txt"))).to be(false)
  end

  # unsafe_please_delete emptied an archive's destination (removed a
  # tree's) before the download: a host that then failed, or that was
  # stopped because another failed, was left with nothing there.
  it "keeps an occupied destination with unsafe_please_delete when the download fails" do
    [["v9", "/srv/keep-a", [], "/tmp/v9.tgz.torrent"],
     ["t9", "/srv/keep-t", ["tree=1"], "/tmp/t9.tree.torrent"]].each do |tag, root, extra, blocker|
      (1..HOSTS).each do |i|
        FileUtils.mkdir_p(host_path(i, "#{root}/#{tag}"))
        File.write(host_path(i, "#{root}/#{tag}/old.txt"), "old")
      end
      FileUtils.mkdir_p(host_path(2, blocker)) # h2's torrent cannot be read (h1 seeds)
      out, status = cap("murder:distribute", "tag=#{tag}", "files_path=/srv/src", "destination_path=#{root}",
                        *extra, "unsafe_please_delete=1")
      expect(status.success?).to be(false), out
      (1..HOSTS).each do |i|
        dir = host_path(i, "#{root}/#{tag}")
        entries = Dir.exist?(dir) ? Dir.children(dir).sort : []
        # The old content, or the whole new release on a host that was done.
        expect([["old.txt"], %w[README app]]).to include(entries), "#{tag} h#{i}: #{entries}"
      end
      expect(Dir.children(host_path(2, "#{root}/#{tag}"))).to eq(["old.txt"])
    ensure
      FileUtils.rm_rf(host_path(2, blocker))
    end
  end

  it "distributes one file as it is with path_is_file" do
    cap!("murder:distribute", "tag=v4", "files_path=/srv/src/app/lib/blob.bin", "path_is_file=1",
         "destination_path=/srv/files/blob.bin")
    expected = File.binread(host_path(1, "/srv/src/app/lib/blob.bin"))
    (1..HOSTS).each { |i| expect(File.binread(host_path(i, "/srv/files/blob.bin"))).to eq(expected), "h#{i}" }
    eventually(timeout: 15) { murder_processes.empty? }
    # Into temp_path itself: the file lands at /tmp/TAG, which was the
    # download's own name, and clean_temp_files removed it.
    cap!("murder:distribute", "tag=v4b", "files_path=/srv/src/app/lib/blob.bin", "path_is_file=1",
         "destination_path=/tmp")
    (1..HOSTS).each { |i| expect(File.binread(host_path(i, "/tmp/v4b"))).to eq(expected), "h#{i}" }
    # A destination that is the download's own name is refused up front.
    out, status = cap("murder:distribute", "tag=v4c", "files_path=/srv/src/app/lib/blob.bin", "path_is_file=1",
                      "destination_path=/tmp/v4c.tgz")
    expect(status.success?).to be(false)
    expect(out).to include("/tmp/v4c.tgz is the download itself")
  end

  # 2010's no_tag_directory extracted into destination_path itself and
  # unsafe_please_delete emptied it; main replaced the directory (a symlinked
  # destination became a plain one), and put a path_is_file file for a
  # directory destination at DIR/NAME.murder-copy.
  it "extracts into destination_path itself with no_tag_directory, and copies a file into a directory under its tag" do
    (1..HOSTS).each do |i|
      FileUtils.mkdir_p(host_path(i, "/srv/real"))
      File.write(host_path(i, "/srv/real/old.txt"), "old")
      File.symlink("/srv/real", host_path(i, "/srv/current"))
      FileUtils.mkdir_p(host_path(i, "/srv/files-dir"))
    end
    cap!("murder:distribute", "tag=v5", "files_path=/srv/src", "destination_path=/srv/current", "no_tag_directory=1",
         "unsafe_please_delete=1")
    cap!("murder:distribute", "tag=v6", "files_path=/srv/src/app/lib/blob.bin", "path_is_file=1",
         "destination_path=/srv/files-dir")
    expected = File.binread(host_path(1, "/srv/src/app/lib/blob.bin"))
    (1..HOSTS).each do |i|
      expect(File.symlink?(host_path(i, "/srv/current"))).to be(true), "h#{i}"
      expect(File.binread(host_path(i, "/srv/real/app/lib/blob.bin"))).to eq(expected), "h#{i}"
      expect(Dir.children(host_path(i, "/srv/real")).sort).to eq(%w[README app]), "h#{i}: #{Dir.children(host_path(i, "/srv/real"))}"
      expect(Dir.children(host_path(i, "/srv/files-dir"))).to eq(["v6"]), "h#{i}"
      expect(File.binread(host_path(i, "/srv/files-dir/v6"))).to eq(expected), "h#{i}"
    end
    eventually(timeout: 15) { murder_processes.empty? }
  end

  # SSHKit joins a command's words unquoted: create_torrent's tar was given
  # --exclude=.git* bare, a glob that fails in zsh or under bash's failglob.
  it "runs on a seeder whose shell fails a glob that matches nothing" do
    bashrc = File.join(FARM, "hosts/h1/root/.bashrc")
    File.write(bashrc, "shopt -s failglob\n")
    cap!("murder:distribute", "tag=v7", "files_path=/srv/src", "destination_path=/srv/releases")
    expect_release("v7")
  ensure
    FileUtils.rm_f(bashrc)
  end

  it "refuses tags with a slash or shell characters, naming the argument and touching nothing" do
    ["a/b", "v1;touch /tmp/pwned", "$(touch /tmp/pwned)", ""].each do |tag|
      out, status = cap("murder:distribute", "tag=#{tag}", "files_path=/srv/src", "destination_path=/srv/releases")
      expect(status).not_to be_success
      expect(out).to match(/tag is required|tag .* is not allowed: use letters/)
    end
    (1..HOSTS).each { |i| expect(File.exist?(host_path(i, "/tmp/pwned"))).to be(false) }
    expect(File.exist?("/tmp/pwned")).to be(false)
  end

  # Two hosts refuse: main named the first and counted the other among the
  # hosts "stopped as a result", so a user fixed one and failed again.
  it "refuses hosts whose destination is not empty, naming each, and leaves those destinations alone" do
    victims = [3, 5].map { |i| host_path(i, "/srv/releases/v3") }
    victims.each do |victim|
      FileUtils.mkdir_p(victim)
      File.write(File.join(victim, "keep.txt"), "precious")
    end
    out, status = cap("murder:distribute", "tag=v3", "files_path=/srv/src", "destination_path=/srv/releases")
    expect(status).not_to be_success
    expect(out).to match(%r{10\.250\.0\.13: /srv/releases/v3 is not empty \(set unsafe_please_delete=1})
    expect(out).to match(%r{10\.250\.0\.15: /srv/releases/v3 is not empty})
    victims.each { |victim| expect(Dir.children(victim)).to eq(["keep.txt"]) }
    eventually(timeout: 15) { murder_processes.empty? } # seeding and tracker stopped despite the failure
  end

  # murder:distribute's peers run in parallel. Host 1 (the first joined,
  # and the seeder) refuses at once; the seeder's uplink is slowed so the
  # other 7 are mid-download then, or still starting. The first failure
  # stops the others' downloads, hosts not started yet do not start, and
  # the task ends only after every host's thread: nothing stalls for its
  # stall timeout after the seed is gone. (Peers still running 15 s after
  # failed here once; then, with the task ending while hosts were still
  # starting, peers that started after the stop ran on for seconds.)
  it "stops the other hosts' downloads when one host fails" do
    victim = host_path(1, "/srv/releases/v4")
    FileUtils.mkdir_p(victim)
    File.write(File.join(victim, "keep.txt"), "precious")
    shape = %w[ip netns exec mfh1 tc qdisc replace dev eth0 root tbf rate 4mbit burst 32kbit latency 400ms]
    system(*shape, exception: true)
    out, status = cap("murder:distribute", "tag=v4", "files_path=/srv/src", "destination_path=/srv/releases")
    expect(status).not_to be_success
    expect(out).to match(%r{10\.250\.0\.11: /srv/releases/v4 is not empty})
    expect(Dir.children(victim)).to eq(["keep.txt"])
    expect(murder_processes).to be_empty
    sleep 3 # a peer started after the stop would show now
    expect(murder_processes).to be_empty
  ensure
    system("ip", "netns", "exec", "mfh1", "tc", "qdisc", "del", "dev", "eth0", "root", err: File::NULL)
  end

  # A host's `murder peer`, both processes, killed by a signal (an
  # operator's `pkill -9 murder`): SSH sends `exit-signal`, which SSHKit
  # ignores, taking the command for a success without murder's summary.
  # (One of them killed is told apart: the worker's death is reported by
  # the foreground, and a worker that outlives the foreground finishes and
  # prints the summary itself.)
  it "fails naming a host whose murder peer was killed by a signal" do
    slow = %w[ip netns exec mfh3 tc qdisc replace dev eth0 root tbf rate 1mbit burst 32kbit latency 400ms]
    system(*slow, exception: true)
    killer = kill_in_netns("mfh3") do |procs|
      peers = procs.select { |_, (argv, _)| argv[0].to_s.end_with?("/murder") && argv[1] == "peer" }
      # The foreground `murder peer` and the worker it forked.
      worker, (_, foreground) = peers.find { |_, (_, ppid)| peers.key?(ppid) }
      [foreground, worker] if worker
    end
    out, status = cap("murder:distribute", "tag=v9", "files_path=/srv/src", "destination_path=/srv/releases")
    expect(killer.value.size).to eq(2)
    expect(status).not_to be_success, out
    expect(out).to include("10.250.0.13: #{Murder::Remote::NO_SUMMARY}"), out
  ensure
    killer&.kill
    system("ip", "netns", "exec", "mfh3", "tc", "qdisc", "del", "dev", "eth0", "root", err: File::NULL)
    eventually(timeout: 90) { murder_processes.empty? }
  end

  # The clean-up of murder:distribute covers every step after the binary:
  # a torrent that cannot be made (no such files_path on the seeder) used
  # to fail before the `begin`, leaving the trackers it had started running.
  it "stops the trackers it started when making the torrent fails" do
    out, status = cap("murder:distribute", "tag=v5", "files_path=/srv/no-such-dir", "destination_path=/srv/releases")
    expect(status).not_to be_success
    expect(out).to match(/no-such-dir/)
    eventually(timeout: 15) { murder_processes.empty? }
  end

  it "fails naming a host that cannot be reached" do
    out, status = cap("murder:distribute_files", env: { "FARM_UNREACHABLE" => "10.250.0.99" })
    expect(status).not_to be_success
    expect(out).to include("10.250.0.99")
  end
end

RSpec.describe "cap deploy with the murder strategy on the farm", order: :defined do
  FARM_D = "/var/tmp/murder-farm-spec"
  CAP_D = File.join(ROOT, "spec/fixtures/farm")
  SIZE = 8

  before(:all) do
    out, status = Open3.capture2e({ "FARM_DIR" => FARM_D }, File.join(ROOT, "bin/farm"), "up", SIZE.to_s)
    raise "farm up failed:\n#{out}" unless status.success?

    @repo = Dir.mktmpdir("murder-app-")
    git = ->(*args) { system("git", "-C", @repo, *args, out: File::NULL, err: File::NULL, exception: true) }
    git.call("init", "-q")
    git.call("config", "user.email", "dev@example.invalid")
    git.call("config", "user.name", "dev")
    FileUtils.mkdir_p(File.join(@repo, "app"))
    File.binwrite(File.join(@repo, "app/blob.bin"), Random.new(1).bytes(1_500_000))
    60.times do |i|
      path = File.join(@repo, "lib/d#{i % 4}/f#{i}.rb")
      FileUtils.mkdir_p(File.dirname(path))
      File.binwrite(path, Random.new(100 + i).bytes(2_000 + i * 311))
    end
    FileUtils.mkdir_p(File.join(@repo, "bin"))
    File.write(File.join(@repo, "bin/run"), "#!/bin/sh\necho run\n")
    File.chmod(0o755, File.join(@repo, "bin/run"))
    File.symlink("../app/blob.bin", File.join(@repo, "bin/blob"))
    File.write(File.join(@repo, "VERSION"), "one\n")
    git.call("add", ".")
    git.call("commit", "-q", "-m", "one")
    @git = git
  end

  after(:all) do
    Open3.capture2e({ "FARM_DIR" => FARM_D }, File.join(ROOT, "bin/farm"), "down")
    FileUtils.rm_rf(@repo) if @repo
  end

  def cap!(*args, env: {})
    env = { "FARM_DIR" => FARM_D, "FARM_SIZE" => SIZE.to_s, "MURDER_BINARY" => MURDER_BIN,
            "BUNDLE_GEMFILE" => File.join(ROOT, "Gemfile"), "FARM_REPO" => @repo }.merge(env)
    out, status = Open3.capture2e(env, "bundle", "exec", "cap", "farm", *args, chdir: CAP_D)
    raise "cap #{args.join(' ')} failed:\n#{out}" unless status.success?

    out
  end

  # cap, killed (with its process group) if it runs longer than `limit`
  # seconds: a deploy whose barrier waits for a vote that never comes
  # would hang the suite. Returns the output and the status.
  def cap_within(limit, *args, env: {})
    env = { "FARM_DIR" => FARM_D, "FARM_SIZE" => SIZE.to_s, "MURDER_BINARY" => MURDER_BIN,
            "BUNDLE_GEMFILE" => File.join(ROOT, "Gemfile"), "FARM_REPO" => @repo }.merge(env)
    out = +""
    Open3.popen2e(env, "bundle", "exec", "cap", "farm", *args, chdir: CAP_D, pgroup: true) do |stdin, io, waiter|
      stdin.close
      reader = Thread.new { out << io.read }
      unless waiter.join(limit)
        Process.kill("KILL", -waiter.pid)
        raise "cap #{args.join(' ')} still running after #{limit} s:\n#{out}"
      end
      reader.join
      [out, waiter.value]
    end
  end

  def app(i, path) = File.join(FARM_D, "hosts/h#{i}/srv/farmapp", path)

  # `current` links to an absolute path inside the host: follow it there.
  def current(i, path) = app(i, "releases/#{File.basename(File.readlink(app(i, 'current')))}/#{path}")

  def head = `git -C #{@repo.shellescape} rev-parse HEAD`.strip

  # Every entry of a tree but Capistrano's REVISION: contents (or link
  # target) and mode.
  def tree(root)
    Dir.glob("**/*", File::FNM_DOTMATCH, base: root).reject { |p| p.end_with?(".") || p == "REVISION" || p.start_with?(".git") }
       .filter_map do |rel|
         path = File.join(root, rel)
         stat = File.lstat(path)
         next if stat.directory?

         [rel, stat.symlink? ? "-> #{File.readlink(path)}" : File.binread(path), stat.mode & 0o777]
       end.sort
  end

  def expect_release_everywhere(release = nil)
    expected = tree(@repo)
    (1..SIZE).each do |i|
      root = release ? app(i, "releases/#{release}") : app(i, "releases/#{File.basename(File.readlink(app(i, 'current')))}")
      expect(tree(root)).to eq(expected), "h#{i}"
      expect(File.read(File.join(root, "REVISION")).chomp).to eq(head) unless release
    end
  end

  it "deploys a tree with executables and a link twice, the second fetching only the change, and rolls back" do
    # The seed on the port a firewall would open (:murder_seed_port).
    out = cap!("deploy", env: { "MURDER_SEED_PORT" => "18997" })
    expect(out).not_to match(/\btar\b|packed/) # no archive, no extraction
    expect(out).to include("goes out in a closed swarm") # the strategy's default
    expect(out).to include("seeded from 10.250.0.1:18997;"), out
    expect_release_everywhere
    first_release = File.basename(File.readlink(app(1, "current")))

    File.write(File.join(@repo, "VERSION"), "two\n")
    changed = ["lib/d1/f5.rb", "lib/d2/f10.rb"].each do |f|
      File.binwrite(File.join(@repo, f), Random.new(7).bytes(3_000))
    end
    @git.call("commit", "-q", "-am", "two")
    # Every host kept the first deploy's torrent as the next ticket's base;
    # host 1 loses it, as a host new to the fleet has none.
    (1..SIZE).each { |i| expect(File.size?(app(i, "shared/murder/run/ticket-base.torrent"))).to be_positive, "h#{i}" }
    File.delete(app(1, "shared/murder/run/ticket-base.torrent"))
    out = cap!("deploy")
    expect_release_everywhere
    (1..SIZE).each { |i| expect(Dir.children(app(i, "releases")).size).to eq(2) }
    # The others took the ticket as the difference from the first's
    # torrent; host 1 asked for the whole one, and got it.
    tickets = out[/deploy ticket ([\d.]+ \S+) to (\d+) hosts \(the difference from the last deploy's torrent\), ([\d.]+ \S+) to (\d+)/]
    expect(tickets).not_to be_nil, out
    difference, hosts_with_it, whole, hosts_without = Regexp.last_match.captures
    expect([hosts_with_it.to_i, hosts_without.to_i]).to eq([SIZE - 1, 1])
    bytes = ->(human) { human.to_f * { "B" => 1, "KiB" => 1024, "MiB" => 1 << 20 }.fetch(human.split.last) }
    expect(bytes.(difference)).to be < bytes.(whole) / 2
    # Each host received at most the changed files and one piece for each.
    piece = out[/pieces of ([\d.]+) KiB/, 1].to_f * 1024
    expect(piece).to be_positive, out
    bound = File.size(File.join(@repo, "VERSION")) + changed.sum { |f| File.size(File.join(@repo, f)) } + 3 * piece
    downloads = out.scan(/murder:   (\S+): .* reused, ([\d.]+) (B|KiB|MiB) downloaded/)
    expect(downloads.size).to eq(SIZE), out
    downloads.each do |host, amount, unit|
      bytes = amount.to_f * { "B" => 1, "KiB" => 1024, "MiB" => 1 << 20 }.fetch(unit)
      expect(bytes).to be <= bound, "#{host} downloaded #{bytes} bytes, bound #{bound}"
    end

    cap!("deploy:rollback")
    @git.call("checkout", "-q", "HEAD~1")
    (1..SIZE).each { |i| expect(File.basename(File.readlink(app(i, "current")))).to eq(first_release), "h#{i}" }
    expect_release_everywhere(first_release)
    @git.call("checkout", "-q", "-")
    eventually(timeout: 15) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  end

  # Servers that cannot reach this machine (a firewall that drops its
  # ports; here the address the torrent names is nobody's) learn of no
  # peer. Each waited out its 60 s stall timeout before failing (rule A1),
  # and the error did not say what to open.
  it "fails in seconds when the servers cannot reach this machine's tracker, naming the ports to open" do
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    # A change no host holds: a release its earlier ones hold whole is
    # placed from them alone, with no peer needed.
    File.write(File.join(@repo, "VERSION"), "unreachable\n")
    @git.call("commit", "-q", "-am", "unreachable")
    out, status = cap_within(120, "deploy", env: { "MURDER_DEPLOYER_IP" => "10.250.0.99", "MURDER_SEED_PORT" => "18997" })
    expect(status).not_to be_success
    expect(out).to match(%r{the release was placed on no host; failed: 10\.250\.0\.\d+: .*no tracker answered in 15 s and no peer connected: tracker http://10\.250\.0\.99:8998/announce}), out
    expect(out).to include("(the hosts must reach this machine on TCP ports 8998 (the tracker) and 18997 (the seed): " \
                           "open them, or set :murder_deployer_ip, :tracker_port and :murder_seed_port)"), out
    expect((1..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before)
    eventually(timeout: 15) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  end

  # A host whose murder is outdated gets it installed in the same round
  # trip; when that install fails, the host must still vote, or every host
  # that staged the release waits for it in the barrier forever (main
  # before this hung here: the install's error was raised from inside a
  # rescue clause, past the clause that votes). Host 3's binary record is
  # removed (so it is outdated) and a directory stands where the upload
  # goes (so the install's rename fails).
  it "fails naming a host whose murder cannot be installed, and the others do not wait for it" do
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    File.write(File.join(@repo, "VERSION"), "install fails\n")
    @git.call("commit", "-q", "-am", "install fails")
    File.delete(app(3, "shared/murder/murder.sha256"))
    FileUtils.mkdir_p(app(3, "shared/murder/murder.new/in-the-way"))
    # Before the fix, a host that failed its install never voted: cap hung.
    out, status = cap_within(120, "deploy")
    expect(status).not_to be_success
    expect(out).to match(/the release was placed on no host; failed: 10\.250\.0\.13: /), out
    expect((1..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before)
    eventually(timeout: 15) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  ensure
    FileUtils.rm_rf(app(3, "shared/murder/murder.new"))
  end

  # A deployer's binary of another OS or CPU (a developer's Mac, an arm64
  # laptop for x86_64 servers) replaced every host's murder and failed on
  # each with "Exec format error". Here: the real binary, its ELF header
  # naming aarch64, as the kernel sees one built for that CPU.
  it "installs no murder binary the hosts cannot run, naming what they are, and keeps theirs" do
    state = lambda do
      (1..SIZE).map do |i|
        [File.symlink?(app(i, "current")) && File.readlink(app(i, "current")),
         File.exist?(app(i, "shared/murder/murder.sha256")) && File.read(app(i, "shared/murder/murder.sha256"))]
      end
    end
    before = state.call
    arm = File.join(Dir.mktmpdir("murder-arm-"), "murder")
    FileUtils.cp(MURDER_BIN, arm)
    File.open(arm, "r+b") { |f| f.pwrite([183].pack("v"), 18) }
    out, status = cap_within(120, "deploy", env: { "MURDER_BINARY" => arm })
    expect(status).not_to be_success
    expect(out).to include("murder: not installed anywhere: the murder binary #{arm} is built for Linux aarch64, and "), out
    expect(out).to match(/are Linux x86_64: set :murder_binary \(or MURDER_BINARY\)/), out
    (1..SIZE).each { |i| expect(out).to match(/\b10\.250\.0\.#{10 + i}\b/) }
    expect(state.call).to eq(before) # no release placed, no binary replaced
    # The same when this machine's record says the hosts hold that binary
    # (no check round): each host's murder says it is outdated, and what
    # the host is.
    record = File.join(CAP_D, "tmp/murder/binary-hosts.json")
    kept = File.exist?(record) && File.read(record)
    Capistrano::Murder::Support.remember_binary(record, Murder::Remote.sha256(arm),
                                                (1..SIZE).map { |i| "10.250.0.#{10 + i}" })
    out, status = cap_within(120, "deploy", env: { "MURDER_BINARY" => arm })
    expect(status).not_to be_success
    said = Regexp.new("the release was placed on no host; failed: 10\\.250\\.0\\.\\d+: the murder binary " \
                      "#{Regexp.escape(arm)} is built for Linux aarch64, and 10\\.250\\.0\\.\\d+ is Linux x86_64: " \
                      "set :murder_binary")
    expect(out).to match(said), out
    expect(state.call).to eq(before)
  ensure
    kept ? File.write(record, kept) : FileUtils.rm_f(record) if record
    FileUtils.rm_rf(File.dirname(arm)) if arm
  end

  # The deployer's seed failed (a changed file of the exported tree cut short under it, once
  # the torrent was made): every host waited out its stall timeout (10 s)
  # and the deploy's error named the hosts, not the seed.
  it "aborts every host at once and names the seed when the deployer's seed fails" do
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    File.write(File.join(@repo, "VERSION"), "seed fails\n")
    @git.call("commit", "-q", "-am", "seed fails")
    cache = File.join(CAP_D, "tmp/murder")
    made = File.mtime(File.join(cache, "hashes.json"))
    # The seed checks each piece as it first serves it (lazy_check): cut the
    # tree short between the torrent and the hosts' first request.
    cutter = Thread.new do
      sleep 0.005 until File.mtime(File.join(cache, "hashes.json")) != made
      File.truncate(File.join(cache, "tree/VERSION"), 1) # changed: no host holds it

    end
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, status = cap_within(120, "deploy")
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    expect(status).not_to be_success
    expect(out).to match(/the seed on this machine failed \(.*VERSION.*\); the release was placed on no host; failed: /), out
    expect(out).to include("aborted by the deployer")
    # Well within a host's stall timeout (10 s) past Capistrano's own steps.
    expect(took).to be < 10, out
    expect((1..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before)
    eventually(timeout: 15) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  ensure
    cutter&.kill
    # The next export writes the tree afresh.
    FileUtils.rm_rf([File.join(cache, "tree"), File.join(cache, "index")]) if cache
  end

  # Capistrano's filters (HOSTS=, ROLES=, :filter) narrow what `on` runs
  # on; the barrier counted every server, waited for votes that never
  # came, and cap hung.
  # The ticket goes to each host on stdin after murder's prompt on stderr:
  # with `set :pty, true` the prompt came on stdout, the ticket was never
  # sent, and the deploy waited for ever.
  # A host that stops answering (its link down) once its murder peer has
  # started: nothing on that SSH channel ever ended, the other hosts waited
  # at the barrier for its vote, and cap hung until killed.
  it "fails naming a host that stops answering, within seconds" do
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    File.write(File.join(@repo, "VERSION"), "host goes silent\n")
    @git.call("commit", "-q", "-am", "host goes silent")
    link = ->(state) { system("ip", "netns", "exec", "mfh3", "ip", "link", "set", "eth0", state, exception: true) }
    cutter = Thread.new do
      sleep 0.02 until Dir.glob(app(3, "shared/murder/run/peer-*.pid")).any?
      link.call("down")
    end
    out, status = cap_within(100, "deploy")
    expect(status).not_to be_success
    expect(out).to match(/10\.250\.0\.13: .*not responding/), out
    expect((1..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before)
  ensure
    cutter&.kill
    link&.call("up")
    # h3's murder peer ends on its own (stall timeout) once it is alone.
    eventually(timeout: 90) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  end

  # The remote shell that runs murder killed by a signal: SSH sends
  # `exit-signal`, which SSHKit ignores, taking the command for a success.
  # The deploy went on as if that host had its release, and failed later
  # in Capistrano's own tasks ("Directory does not exist").
  it "fails naming a host whose remote shell was killed by a signal" do
    currents = -> { (1..SIZE).map { |i| File.symlink?(app(i, "current")) && File.readlink(app(i, "current")) } }
    before = currents.call
    File.write(File.join(@repo, "VERSION"), "shell killed\n")
    @git.call("commit", "-q", "-am", "shell killed")
    slow = ->(*how) { system("ip", "netns", "exec", "mfh3", "tc", "qdisc", *how, exception: true) }
    slow.call("replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms")
    # In h3, the shell (`sh -c SCRIPT murder-peer …`) whose `murder peer`
    # runs: the download is under way.
    killer = kill_in_netns("mfh3") do |procs|
      peers = procs.select { |_, (argv, _)| argv[0].to_s.end_with?("/murder") && argv[1] == "peer" }
      peers.values.map(&:last).find { |pid| procs.dig(pid, 0, 0) == "sh" && procs.dig(pid, 0, 3) == "murder-peer" }
    end
    out, status = cap_within(120, "deploy")
    expect(killer.value.size).to eq(1)
    expect(status).not_to be_success, out
    # h3's murder, orphaned, may have staged before its shell died: the
    # others then placed theirs. `current` moves nowhere either way.
    expect(out).to match(/murder: the release was placed on (no host|the other hosts); failed: 10\.250\.0\.13: /), out
    expect(out).to include("10.250.0.13: #{Murder::Remote::NO_SUMMARY}"), out
    expect(currents.call).to eq(before)
  ensure
    killer&.kill
    slow&.call("del", "dev", "eth0", "root")
    eventually(timeout: 90) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  end

  it "deploys with set :pty, true" do
    File.write(File.join(@repo, "VERSION"), "pty\n")
    @git.call("commit", "-q", "-am", "pty")
    out, status = cap_within(90, "deploy", env: { "FARM_PTY" => "1" })
    expect(status).to be_success, out
    (1..SIZE).each { |i| expect(File.read(current(i, "VERSION"))).to eq("pty\n"), "h#{i}" }
  end

  it "deploys to the servers HOSTS= names, and waits for no other" do
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    File.write(File.join(@repo, "VERSION"), "two hosts\n")
    @git.call("commit", "-q", "-am", "two hosts")
    out, status = cap_within(90, "deploy", env: { "HOSTS" => "10.250.0.11,10.250.0.12" })
    expect(status).to be_success, out
    expect(out).to match(/murder: 2 hosts received/), out
    (1..2).each do |i|
      expect(File.readlink(app(i, "current"))).not_to eq(before[i - 1]), "h#{i}"
      expect(File.read(current(i, "VERSION"))).to eq("two hosts\n"), "h#{i}"
    end
    expect((3..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before[2..])
  end

  # A :murder_source_dir that is a git checkout shipped its .git (the
  # repository and its history) to every server; an archive of the same
  # directory never held it.
  it "deploys murder_source_dir as a tree without its .git (murder_exclude's default)" do
    File.write(File.join(@repo, "VERSION"), "from a directory\n")
    @git.call("commit", "-q", "-am", "from a directory")
    out, status = cap_within(90, "deploy", env: { "MURDER_SOURCE_DIR" => @repo })
    expect(status).to be_success, out
    expected = tree(@repo)
    (1..SIZE).each do |i|
      root = current(i, "")
      expect(File.exist?(File.join(root, ".git"))).to be(false), "h#{i} holds .git"
      expect(tree(root)).to eq(expected), "h#{i}"
      expect(File.read(File.join(root, "REVISION"))).to start_with("dir:"), "h#{i}"
    end
  end

  # No server may open a connection to this machine (a deployer behind
  # NAT, a CI runner): each host's routing refuses every packet to it but
  # its sshd's answers. A tree deploy could not be made at all; through
  # the relay on h1 (murder_relay), every host gets it, and a second
  # deploy through it reuses the first.
  def refuse_connections_to_the_deployer(on)
    (1..SIZE).each do |i|
      rules = [%W[priority 100 to 10.250.0.1 ipproto tcp sport 22 lookup main], %W[priority 101 to 10.250.0.1 prohibit]]
      rules.each { |rule| system("ip", "-n", "mfh#{i}", "rule", on ? "add" : "del", *rule, exception: on) }
    end
  end

  it "deploys a tree through the relay on a server when no server can connect to this machine (murder_relay)" do
    refuse_connections_to_the_deployer(true)
    # What the rules do: a host's connection to a port open here fails.
    listening = TCPServer.new("10.250.0.1", 0)
    reach = ["ip", "netns", "exec", "mfh2", "bash", "-c", "exec 3<>/dev/tcp/10.250.0.1/#{listening.addr[1]}"]
    expect(system(*reach, err: File::NULL)).to be(false)
    listening.close
    File.write(File.join(@repo, "VERSION"), "through the relay\n")
    @git.call("commit", "-q", "-am", "through the relay")
    out, status = cap_within(120, "deploy", env: { "MURDER_RELAY" => "1" })
    expect(status).to be_success, out
    expect(out).to include("through the relay on 10.250.0.11")
    # net-ssh 7.0.1's own forwarding printed each forwarded connection.
    expect(out).not_to match(/^REMOTE/), out
    expect_release_everywhere
    File.write(File.join(@repo, "VERSION"), "through the relay, again\n")
    @git.call("commit", "-q", "-am", "through the relay, again")
    out, status = cap_within(120, "deploy", env: { "MURDER_RELAY" => "1" })
    expect(status).to be_success, out
    expect_release_everywhere
    downloads = out.scan(/murder:   (\S+): .* reused, ([\d.]+) (B|KiB|MiB) downloaded/)
    expect(downloads.size).to eq(SIZE), out
    downloads.each { |host, _, unit| expect(unit).not_to eq("MiB"), "#{host} downloaded the release again:\n#{out}" }
  ensure
    refuse_connections_to_the_deployer(false)
    eventually(timeout: 15) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (relay|peer)}).empty? }
  end

  # The relay's end (its server's sshd, an operator's kill) leaves the
  # servers without the seed: every host is told to stop at once and the
  # error names the relay, where each would wait out its stall timeout.
  it "stops every host and names the relay when the relay dies during the deploy" do
    refuse_connections_to_the_deployer(true)
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    File.binwrite(File.join(@repo, "app/blob.bin"), Random.new(11).bytes(1_500_000))
    @git.call("commit", "-q", "-am", "a new blob")
    slow = ->(*how) { system("ip", "netns", "exec", "mfh3", "tc", "qdisc", *how, exception: true) }
    slow.call("replace", "dev", "eth0", "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "400ms")
    # Once h3 downloads, the relay on h1 is killed.
    killer = kill_in_netns("mfh1") do |procs|
      relay = procs.find { |_, (argv, _)| argv[0].to_s.end_with?("/murder") && argv[1] == "relay" }&.first
      downloading = `ip netns pids mfh3`.split.any? do |pid|
        File.read("/proc/#{pid}/cmdline").split("\0")[1] == "peer"
      rescue Errno::ENOENT
        false
      end
      relay if downloading
    end
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, status = cap_within(120, "deploy", env: { "MURDER_RELAY" => "1" })
    expect(killer.value.size).to eq(1)
    expect(status).not_to be_success, out
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 45
    expect(out).to include("the relay on 10.250.0.11 failed ("), out
    expect((1..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before)
  ensure
    killer&.kill
    slow&.call("del", "dev", "eth0", "root")
    refuse_connections_to_the_deployer(false)
    eventually(timeout: 90) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (relay|peer)}).empty? }
  end

  it "fails at once, naming the relay and the port, when the relay's port is taken there" do
    taken = Process.spawn("ip", "netns", "exec", "mfh1", "python3", "-c",
                          "import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); " \
                          "s.bind(('0.0.0.0', 8998)); s.listen(); print('up', flush=True); time.sleep(120)",
                          out: (reader, writer = IO.pipe).last)
    writer.close
    expect(reader.gets).to eq("up\n")
    before = (1..SIZE).map { |i| File.readlink(app(i, "current")) }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    out, status = cap_within(90, "deploy", env: { "MURDER_RELAY" => "1" })
    expect(status).not_to be_success
    expect(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started).to be < 30
    expect(out).to match(/the relay on 10\.250\.0\.11 failed: .*8998.*in use/i), out
    expect((1..SIZE).map { |i| File.readlink(app(i, "current")) }).to eq(before)
  ensure
    if taken
      Process.kill("KILL", taken)
      Process.wait(taken)
    end
  end

  it "ships one archive with murder_release :archive, seeding from the deployer with murder_seed_locally" do
    File.write(File.join(@repo, "VERSION"), "three\n")
    @git.call("commit", "-q", "-am", "three")
    # tree=1 (meant for Murder's manual tasks) is left in the environment:
    # the archive deploy ships its archive all the same.
    out = cap!("deploy", env: { "MURDER_RELEASE" => "archive", "MURDER_SEED_LOCALLY" => "1",
                                "MURDER_COMPRESSION" => "none", "tree" => "1" })
    expect(out).not_to include("murder:start_seeding") # no seeder host involved
    packed = Integer(out[/packed (\d+) bytes/, 1] || raise("no 'packed N bytes' line in:\n#{out}"))
    expect(packed).to be_positive
    expect(packed % 512).to eq(0), "a plain tar is whole 512-byte records; #{packed} bytes is not"
    (1..SIZE).each do |i|
      expect(File.read(current(i, "VERSION"))).to eq("three\n"), "h#{i}"
      expect(File.read(current(i, "REVISION")).chomp).to eq(head)
    end
    eventually(timeout: 15) { `ps -eo args=`.lines.grep(%r{/srv/farmapp/shared/murder/murder (tracker|seed|peer)}).empty? }
  end
end
