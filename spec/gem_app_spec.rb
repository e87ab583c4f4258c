# frozen_string_literal: true

require "bundler"

# What a new user does, from the README: build and install the gem, then in
# a separate application (a git repository outside this one) write the
# Gemfile, Capfile and config/deploy.rb of the quick start and deploy it to
# 8 farm hosts, twice, and roll back. No :murder_binary, no target/ in reach:
# the gem must bring the binary the hosts run. Needs root (the farm).
RSpec.describe "murder as a gem in someone else's project", order: :defined do
  FARM_G = "/var/tmp/murder-farm-gem"
  HOSTS_G = 8

  # The README's quick-start snippets, by the name after "quick-start:".
  def self.snippets
    File.read(File.join(ROOT, "README.md"))
        .scan(/<!-- quick-start: (\S+) -->\n```ruby\n(.*?)```/m).to_h
  end

  before(:all) do
    out, status = Open3.capture2e({ "FARM_DIR" => FARM_G }, File.join(ROOT, "bin/farm"), "up", HOSTS_G.to_s)
    raise "farm up failed:\n#{out}" unless status.success?

    @work = Dir.mktmpdir("murder-gem-app-")
    @gem_home = File.join(@work, "gems")
    build = File.join(@work, "build")
    spec = Gem::Specification.load(File.join(ROOT, "murder.gemspec"))
    spec.files.each do |file|
      FileUtils.mkdir_p(File.join(build, File.dirname(file)))
      FileUtils.cp(File.join(ROOT, file), File.join(build, file))
    end
    # The gem's own build (sharing this checkout's cargo cache, for speed).
    install_env = { "GEM_HOME" => @gem_home, "CARGO_TARGET_DIR" => File.join(ROOT, "target"), "BUNDLE_GEMFILE" => nil,
                    "RUBYOPT" => nil, "RUBYLIB" => nil }
    Bundler.with_unbundled_env do
      out, status = Open3.capture2e(install_env, "gem", "build", "murder.gemspec", chdir: build)
      raise "gem build failed:\n#{out}" unless status.success?

      gem_file = Dir[File.join(build, "murder-*.gem")].first
      out, status = Open3.capture2e(install_env, "gem", "install", "--local", "--no-document", gem_file, chdir: build)
      raise "gem install failed:\n#{out}" unless status.success?
    end

    @app = File.join(@work, "app")
    FileUtils.mkdir_p(File.join(@app, "config/deploy"))
    self.class.snippets.each { |name, text| File.write(File.join(@app, name), text) }
    # The one file the README leaves to the user: the stage's servers.
    File.write(File.join(@app, "config/deploy/farm.rb"), <<~RUBY)
      #{HOSTS_G}.times { |i| server "10.250.0.\#{11 + i}", roles: %w[app] }
      set :ssh_options, { user: "root", keys: ["#{FARM_G}/id_ed25519"], keys_only: true, auth_methods: ["publickey"],
                          user_known_hosts_file: "#{FARM_G}/known_hosts", verify_host_key: :always, timeout: 5 }
      set :murder_linger, 2
    RUBY
    File.write(File.join(@app, "VERSION"), "one\n")
    FileUtils.mkdir_p(File.join(@app, "bin"))
    File.write(File.join(@app, "bin/run"), "#!/bin/sh\necho run\n")
    File.chmod(0o755, File.join(@app, "bin/run"))
    File.binwrite(File.join(@app, "blob.bin"), Random.new(5).bytes(1_000_000))
    git("init", "-q")
    git("config", "user.email", "dev@example.invalid")
    git("config", "user.name", "dev")
    File.write(File.join(@app, ".gitignore"), "tmp/\nlog/\nGemfile.lock\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
  end

  after(:all) do
    Open3.capture2e({ "FARM_DIR" => FARM_G }, File.join(ROOT, "bin/farm"), "down")
    FileUtils.rm_rf(@work) if @work
  end

  def git(*args) = system("git", "-C", @app, *args, out: File::NULL, err: File::NULL, exception: true)

  # The user's shell: the installed gems (and the system's), this
  # checkout's tools and build out of reach.
  def user_env
    path = ENV.fetch("PATH").split(":").reject { |d| d.start_with?(ROOT) }
    { "GEM_HOME" => @gem_home, "GEM_PATH" => [@gem_home, *Gem.default_path].join(":"),
      "PATH" => [File.join(@gem_home, "bin"), *path].join(":"), "BUNDLE_GEMFILE" => File.join(@app, "Gemfile"),
      "MURDER_BINARY" => nil, "CARGO_TARGET_DIR" => nil, "RUBYOPT" => nil, "RUBYLIB" => nil }
  end

  def run_user!(*cmd)
    out, status = Bundler.with_unbundled_env { Open3.capture2e(user_env, *cmd, chdir: @app) }
    raise "#{cmd.join(' ')} failed:\n#{out}" unless status.success?

    out
  end

  def app_path(i, path) = File.join(FARM_G, "hosts/h#{i}/srv/myapp", path)
  def current(i, path) = app_path(i, "releases/#{File.basename(File.readlink(app_path(i, 'current')))}/#{path}")

  it "puts the gem's murder command on PATH, built for hosts" do
    out = run_user!("murder", "--version")
    expect(out).to match(/\Amurder \d+\.\d+\.\d+/)
    binary = run_user!("ruby", "-e", 'require "murder"; print Murder.binary').strip
    expect(binary).to start_with(@gem_home)
    expect(`file #{binary.shellescape}`).to include("stripped")
    expect(File.size(binary)).to be <= 8 << 20
  end

  it "deploys the app of the README's quick start twice to 8 hosts and rolls back" do
    run_user!("bundle", "install", "--local", "--quiet")
    run_user!("bundle", "exec", "cap", "farm", "deploy")
    first = File.basename(File.readlink(app_path(1, "current")))
    (1..HOSTS_G).each do |i|
      expect(File.read(current(i, "VERSION"))).to eq("one\n"), "h#{i}"
      expect(File.executable?(current(i, "bin/run"))).to be(true)
      expect(File.binread(current(i, "blob.bin"))).to eq(File.binread(File.join(@app, "blob.bin")))
    end
    File.write(File.join(@app, "VERSION"), "two\n")
    git("commit", "-q", "-am", "two")
    run_user!("bundle", "exec", "cap", "farm", "deploy")
    (1..HOSTS_G).each { |i| expect(File.read(current(i, "VERSION"))).to eq("two\n"), "h#{i}" }
    run_user!("bundle", "exec", "cap", "farm", "deploy:rollback")
    (1..HOSTS_G).each do |i|
      expect(File.basename(File.readlink(app_path(i, "current")))).to eq(first), "h#{i}"
      expect(File.read(current(i, "VERSION"))).to eq("one\n")
    end
  end
end
