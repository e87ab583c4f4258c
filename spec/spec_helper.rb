# frozen_string_literal: true

$LOAD_PATH.unshift(File.expand_path("../lib", __dir__))
require "murder"
require "fileutils"
require "json"
require "open3"
require "tmpdir"

ROOT = File.expand_path("..", __dir__)
# MURDER_TEST_BIN runs the specs against another build (an older one, say).
MURDER_BIN = ENV.fetch("MURDER_TEST_BIN", File.join(ROOT, "target/release/murder"))
LT_TOOL = File.join(ROOT, "spec/support/lt_tool.py")
SYSTEM_PYTHON = "/usr/bin/python3" # the one that sees Debian's python3-libtorrent

# What SSHKit hands an interaction handler (Murder::Remote::Conversation):
# the command's channel, recording what was sent and whether it closed.
FakeChannel = Struct.new(:sent, :closed) do
  def initialize = super([], false)
  def send_data(data) = sent << data
  def eof! = self.closed = true
end

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

  # Where a download to +dest+ is staged: ".NAME.part" beside it.
  def staging(dest)
    File.join(File.dirname(dest), ".#{File.basename(dest)}.part")
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

# Processes a test starts, ended by pid (never by name) when it is done.
module ProcessHelpers
  def spawn_logged(*cmd, log:)
    pid = Process.spawn(*cmd.map(&:to_s), out: log, err: log, pgroup: true)
    (@spawned ||= []) << pid
    pid
  end

  def end_spawned
    (@spawned || []).each do |pid|
      Process.kill("TERM", -pid)
    rescue Errno::ESRCH
      next
    ensure
      begin
        Process.wait(pid)
      rescue Errno::ECHILD
        nil
      end
    end
  end

  # Polls the block until it returns truthy or +timeout+ seconds pass.
  def eventually(timeout: 20, interval: 0.1)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      result = yield
      return result if result
      raise "condition not met within #{timeout} s" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep interval
    end
  end

  # A thread that watches the processes of farm host NS's network
  # namespace until the block picks some of them from
  # {pid => [argv, parent pid]}, then SIGKILLs those. Its value: the pids.
  def kill_in_netns(ns)
    Thread.new do
      victims = []
      while victims.empty?
        sleep 0.02
        procs = `ip netns pids #{ns}`.split.to_h do |pid|
          argv = File.read("/proc/#{pid}/cmdline").split("\0") rescue []
          ppid = File.read("/proc/#{pid}/status")[/^PPid:\s+(\d+)/, 1].to_i rescue 0
          [pid.to_i, [argv, ppid]]
        end
        victims = Array(yield(procs)).compact
      end
      Process.kill("KILL", *victims)
      victims
    end.tap { |thread| thread.report_on_exception = false }
  end

  # True while the process runs (a zombie waiting to be reaped has ended).
  def process_alive?(pid)
    state = File.read("/proc/#{pid}/stat")[/\) (\S)/, 1]
    !%w[Z X].include?(state)
  rescue Errno::ENOENT
    false
  end

  def free_port
    server = TCPServer.new("127.0.0.1", 0)
    server.addr[1]
  ensure
    server&.close
  end

  def http_get(port, path)
    Net::HTTP.get_response(URI("http://127.0.0.1:#{port}#{path}"))
  end
end

require "cgi"
require "net/http"
require "securerandom"
require "socket"

RSpec.configure do |config|
  config.include ProcessHelpers
  config.after { end_spawned }
end
