# frozen_string_literal: true

# Murder::RakeTask in a project whose bundle lacks net-ssh (Capistrano
# brings it; a Rake-only project must name it): one clear line before
# anything starts, not a LoadError from deep inside a ship.
RSpec.describe "Murder::RakeTask's requirements" do
  it "names net-ssh and net-scp when they cannot be loaded, before it starts a tracker" do
    build = File.join(tmpdir, "build")
    FileUtils.mkdir_p(build)
    File.write(File.join(build, "VERSION"), "one\n")
    script = <<~'RUBY'
      require "murder/rake_task"
      # As in a bundle without them: no directory that holds net/ssh.rb.
      $LOAD_PATH.reject! { |dir| File.exist?(File.join(dir, "net/ssh.rb")) }
      task = Murder::RakeTask.new(:ship) do |t|
        t.source = ARGV[0]
        t.hosts = ["root@192.0.2.1"]
        t.destination = File.join(ARGV[1], "%{tag}")
        t.tag = "r1"
      end
      begin
        task.ship
        puts "shipped"
      rescue Murder::Error => e
        puts "#{e.class}: #{e.message}"
      end
      puts "trackers left: #{ObjectSpace.each_object(Murder::Tracker).count { |t| t.instance_variable_get(:@server) }}"
    RUBY
    out, status = Open3.capture2e(RbConfig.ruby, "--disable-gems", "-I", File.join(ROOT, "lib"), "-e", script,
                                  build, File.join(tmpdir, "releases"), chdir: tmpdir)
    expect(status).to be_success, out
    expect(out).to include("Murder::Error: ship: Murder::RakeTask needs the net-ssh and net-scp gems")
    expect(out).to include("trackers left: 0")
    expect(Dir.exist?(File.join(tmpdir, "releases"))).to be(false)
  end
end
