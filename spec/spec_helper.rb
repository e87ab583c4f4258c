# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "murder"
require "fileutils"
require "json"
require "open3"
require "tmpdir"

ROOT = File.expand_path("..", __dir__)
MURDER_BIN = File.join(ROOT, "target/release/murder")
LT_TOOL = File.join(ROOT, "spec/support/lt_tool.py")
SYSTEM_PYTHON = "/usr/bin/python3" # the one that sees Debian's python3-libtorrent

module SpecHelpers
  def tmpdir
    @tmpdir ||= Dir.mktmpdir("murder-spec-")
  end

  # Runs a command and returns its stdout; fails the example when it fails.
  def run!(*cmd, chdir: tmpdir)
    out, err, status = Open3.capture3(*cmd.map(&:to_s), chdir: chdir)
    raise "#{cmd.join(' ')} failed (#{status.exitstatus}):\n#{out}#{err}" unless status.success?

    out
  end

  # Runs a command expected to fail; returns [status, stdout, stderr].
  def run_failing(*cmd, chdir: tmpdir)
    out, err, status = Open3.capture3(*cmd.map(&:to_s), chdir: chdir)
    [status, out, err]
  end

  def murder(*args)
    run!(MURDER_BIN, *args)
  end

  def libtorrent(*args)
    run!(SYSTEM_PYTHON, LT_TOOL, *args)
  end

  # A small release tree with nested dirs, an empty file and odd sizes.
  def sample_tree(name = "release", files: 40)
    root = File.join(tmpdir, name)
    rng = Random.new(7)
    files.times do |i|
      path = File.join(root, "app", "dir#{i % 5}", "file#{i}.rb")
      FileUtils.mkdir_p(File.dirname(path))
      File.binwrite(path, rng.bytes(rng.rand(1..70_000)))
    end
    File.write(File.join(root, "README"), "sample\n")
    File.write(File.join(root, "app", "empty"), "")
    root
  end

  def sample_file(name = "app.tgz", bytes: 1_500_000)
    path = File.join(tmpdir, name)
    File.binwrite(path, Random.new(3).bytes(bytes))
    path
  end
end

RSpec.configure do |config|
  config.include SpecHelpers
  config.after { FileUtils.rm_rf(@tmpdir) if @tmpdir }
  config.disable_monkey_patching!
  config.order = :random
end
