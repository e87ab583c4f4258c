# frozen_string_literal: true

# What a user does: build the gem, install it locally, require it.
require "bundler"

RSpec.describe "the gem" do
  it "builds, installs with its native extension, and loads from the installed gem" do
    gem_home = File.join(tmpdir, "gems")
    build = File.join(tmpdir, "build")
    # A copy of the sources, as a clean checkout would have them.
    FileUtils.mkdir_p(build)
    spec = Gem::Specification.load(File.join(ROOT, "murder.gemspec"))
    spec.files.each do |file|
      FileUtils.mkdir_p(File.join(build, File.dirname(file)))
      FileUtils.cp(File.join(ROOT, file), File.join(build, file))
    end
    env = { "GEM_HOME" => gem_home, "GEM_PATH" => gem_home, "CARGO_TARGET_DIR" => File.join(ROOT, "target"),
            "BUNDLE_GEMFILE" => nil, "RUBYOPT" => nil, "RUBYLIB" => nil }
    Bundler.with_unbundled_env do
      out, status = Open3.capture2e(env, "gem", "build", "murder.gemspec", chdir: build)
      expect(status).to be_success, out
      gem_file = Dir[File.join(build, "murder-*.gem")].first
      out, status = Open3.capture2e(env, "gem", "install", "--local", "--no-document", gem_file, chdir: build)
      expect(status).to be_success, out
      script = 'require "murder"; puts $LOADED_FEATURES.grep(/murder\.so/).first; ' \
               'puts Murder::Torrent.create(ARGV[0], tracker: "h:1").info_hash'
      out, status = Open3.capture2e(env, "ruby", "-e", script, sample_file, chdir: "/")
      expect(status).to be_success, out
      so_path, hash = out.lines.map(&:chomp)
      expect(so_path).to start_with(File.join(gem_home, "gems", "murder-#{Murder::VERSION}"))
      expect(hash).to eq(Murder::Torrent.create(sample_file, tracker: "h:1").info_hash)
    end
  end
end
