# frozen_string_literal: true

# Twitter's Murder workflow through Capistrano on a farm of 8 real hosts
# (bin/farm: network namespaces with their own sshd and mounts). Needs root.
RSpec.describe "Capistrano murder tasks on a farm of hosts", order: :defined do
  HOSTS = 8
  FARM = File.join(ROOT, "tmp/farm-spec")
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

  it "refuses tags with a slash or shell characters, naming the argument and touching nothing" do
    ["a/b", "v1;touch /tmp/pwned", "$(touch /tmp/pwned)", ""].each do |tag|
      out, status = cap("murder:distribute", "tag=#{tag}", "files_path=/srv/src", "destination_path=/srv/releases")
      expect(status).not_to be_success
      expect(out).to match(/tag/)
    end
    (1..HOSTS).each { |i| expect(File.exist?(host_path(i, "/tmp/pwned"))).to be(false) }
    expect(File.exist?("/tmp/pwned")).to be(false)
  end

  it "refuses a host whose destination is not empty, naming it, and leaves that destination alone" do
    victim = host_path(3, "/srv/releases/v3")
    FileUtils.mkdir_p(victim)
    File.write(File.join(victim, "keep.txt"), "precious")
    out, status = cap("murder:distribute", "tag=v3", "files_path=/srv/src", "destination_path=/srv/releases")
    expect(status).not_to be_success
    expect(out).to match(%r{10\.250\.0\.13: /srv/releases/v3 is not empty \(set unsafe_please_delete=1})
    expect(Dir.children(victim)).to eq(["keep.txt"])
    eventually(timeout: 15) { murder_processes.empty? } # seeding and tracker stopped despite the failure
  end

  it "fails naming a host that cannot be reached" do
    out, status = cap("murder:distribute_files", env: { "FARM_UNREACHABLE" => "10.250.0.99" })
    expect(status).not_to be_success
    expect(out).to include("10.250.0.99")
  end
end
