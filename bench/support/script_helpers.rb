# frozen_string_literal: true

require_relative "../../lib/murder/progress"

# What the demo scripts (bin/demo-swarm, bin/demo-deploy) and benchmarks
# share: bytes in binary units, running a command that must succeed, a
# tool installed when missing, the monotonic clock and a median.
# `include ScriptHelpers` at the top of a script.
module ScriptHelpers
  module_function

  def human(bytes) = Murder::Progress.human(bytes)

  # Runs `cmd`, returns its output (standard error too); aborts naming the
  # command and showing its output when it fails.
  def run!(*cmd)
    out = IO.popen(cmd.map(&:to_s), err: %i[child out], &:read)
    abort "#{cmd.join(' ')} failed:\n#{out}" unless $?.success?
    out
  end

  # Installs Debian's `package` when `command` is not on the PATH (a tool
  # only a benchmark needs, which bin/setup leaves out); aborts naming it
  # when that fails.
  def ensure_command(command, package = command)
    return if ENV.fetch("PATH", "").split(":").any? { |dir| File.executable?(File.join(dir, command)) }

    install = ["apt-get", "install", "-y", "-qq", package, { out: File::NULL, err: File::NULL }]
    installed = system(*install) || (system("apt-get", "update", "-qq") && system(*install))
    abort "#{command} is needed and `apt-get install #{package}` failed" unless installed
  end

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  def median(values)
    s = values.sort
    s.size.odd? ? s[s.size / 2] : (s[s.size / 2 - 1] + s[s.size / 2]) / 2.0
  end
end
