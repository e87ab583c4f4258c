# frozen_string_literal: true

require "spec_helper"
require "sshkit"
require "capistrano/configuration"
require "capistrano/murder/support"

# Capistrano::Murder::Support's checks of what a configuration gives the
# tasks: how a server is named in a deploy's records and votes, how an
# address goes into a URL, and where murder may live on the hosts.
RSpec.describe Capistrano::Murder::Support do
  let(:s) { described_class }

  it "names a server by host and port, so servers sharing a name on other ports stay apart" do
    expect(s.host_key(SSHKit::Host.new("app.example"))).to eq("app.example")
    expect(s.host_key(SSHKit::Host.new("bastion:2201"))).to eq("bastion:2201")
    expect(s.host_key(SSHKit::Host.new("bastion:2202"))).not_to eq(s.host_key(SSHKit::Host.new("bastion:2201")))
    expect(s.host_key("10.0.0.1")).to eq("10.0.0.1")
  end

  it "remembers binary holders by that name: a server on another port is not known" do
    record = File.join(tmpdir, "binary-hosts.json")
    s.remember_binary(record, "a" * 64, [SSHKit::Host.new("bastion:2201")])
    expect(s.binary_known?(record, "a" * 64, [SSHKit::Host.new("bastion:2201")])).to be(true)
    expect(s.binary_known?(record, "a" * 64, [SSHKit::Host.new("bastion:2202")])).to be(false)
  end

  # Capistrano writes the revision with `echo "REV" > REVISION` on every
  # server, unquoted: a source directory's name ran there as a command.
  it "names a source directory's revision with characters no shell acts on" do
    dir = File.join(tmpdir, "build`touch pwned`$(touch pwned2)")
    FileUtils.mkdir_p(dir)
    revision = s.dir_revision(dir)
    expect(revision).to match(/\Adir:[A-Za-z0-9._+-]+@\d{14}\z/)
    out, status = Open3.capture2e("sh", "-c", "echo \"#{revision}\"", chdir: tmpdir)
    expect(status).to be_success
    expect(out.chomp).to eq(revision)
    expect(Dir.children(tmpdir)).to eq([File.basename(dir)])
  end

  # A murder_ip that was a name was dropped without a word: the host
  # announced its route's address instead.
  it "announces murder_ip, else a name that is an address, and refuses a murder_ip that is not one" do
    server = ->(name, **props) { Capistrano::Configuration::Server.new(name).tap { |h| h.with(props) } }
    expect(s.announce_ip(server.call("app1", murder_ip: "10.0.0.5"))).to eq("10.0.0.5")
    expect(s.announce_ip(server.call("app1", murder_ip: "2001:db8::5"))).to eq("2001:db8::5")
    expect(s.announce_ip(server.call("10.0.0.1"))).to eq("10.0.0.1")
    expect(s.announce_ip(server.call("app1.example"))).to be_nil
    expect { s.announce_ip(server.call("app1", murder_ip: "app1.internal")) }
      .to raise_error(Capistrano::Murder::Error, /app1: murder_ip "app1.internal" is not an IP address/)
    expect { s.announce_ip(server.call("app1", murder_ip: "10.0.0.0/24")) }.to raise_error(Capistrano::Murder::Error)
  end

  it "brackets an IPv6 address for a URL, once" do
    expect(s.url_host("2001:db8::5")).to eq("[2001:db8::5]")
    expect(s.url_host("[::1]")).to eq("[::1]")
    expect(s.url_host("10.0.0.1")).to eq("10.0.0.1")
  end

  # The strategy passed the setting to the native extension (an Integer
  # only: "1M" raised a TypeError), Murder's tasks to the command line.
  it "takes a piece length as whole bytes for both ways of making a torrent, naming the setting otherwise" do
    expect(s.piece_length(nil)).to be_nil
    expect(s.piece_length(1_048_576)).to eq(1_048_576)
    expect(s.piece_length("65536")).to eq(65_536)
    ["1M", "64 KiB", "", 1.5, "0x10000"].each do |bad|
      expect { s.piece_length(bad) }.to raise_error(Capistrano::Murder::Error, /murder_piece_length must be a number of bytes/)
    end
  end

  # The seed of a tree deploy listened on a port it picked; a deployer
  # behind a firewall could not open it ahead.
  it "takes a seed port as a whole TCP port, 0 or nil for any free one, naming the setting otherwise" do
    expect(s.port(nil, "murder_seed_port")).to eq(0)
    expect(s.port(0, "murder_seed_port")).to eq(0)
    expect(s.port(8997, "murder_seed_port")).to eq(8997)
    expect(s.port("8997", "murder_seed_port")).to eq(8997)
    [-1, 65_536, "x", "", 1.5, "0x10"].each do |bad|
      expect { s.port(bad, "murder_seed_port") }
        .to raise_error(Capistrano::Murder::Error, /murder_seed_port #{Regexp.escape(bad.inspect)}: give a TCP port/)
    end
  end

  # :murder_exclude names files and directories at any depth; a path would
  # silently match nothing and ship what the project meant to leave out.
  it "takes murder_exclude as names, one or a list, refusing a path or an empty name" do
    expect(s.exclude(nil)).to eq([])
    expect(s.exclude(".git")).to eq([".git"])
    expect(s.exclude([".git", :"*.log"])).to eq([".git", "*.log"])
    ["", "log/*.log", "/tmp", "a\nb"].each do |bad|
      expect { s.exclude([".git", bad]) }
        .to raise_error(Capistrano::Murder::Error, /murder_exclude #{Regexp.escape(bad.inspect)}: give names/)
    end
  end

  # Shared by the deploy strategy and the Rake ship (Murder::Remote).
  it "names the ports to open when hosts never reached this machine's tracker, and only then" do
    reasons = ["murder: release: no tracker answered in 15 s and no peer connected: tracker http://10.0.0.1:8998/announce: " \
               "connection refused", "murder: No space left on device"]
    expect(Murder::Remote.unreachable_hint(reasons, 8998, 8997, "ip, port and seed_port")).to eq(
      " (the hosts must reach this machine on TCP ports 8998 (the tracker) and 8997 (the seed): " \
      "open them, or set ip, port and seed_port)"
    )
    expect(Murder::Remote.unreachable_hint(reasons.drop(1), 8998, 8997, "ip")).to eq("")
    expect(Murder::Remote.unreachable_hint(reasons, 8998, 8997, "port", at: "the relay on app1")).to start_with(
      " (the hosts must reach the relay on app1 on TCP ports 8998"
    )
  end

  # The hosts only see their source go: the error names it first, the
  # relay before the seed behind it.
  it "names a failed seed, or the relay in front of it, first" do
    r = Murder::Remote
    expect(r.seed_failed(nil)).to eq("")
    expect(r.seed_failed("a file changed")).to eq("the seed on this machine failed (a file changed); ")
    expect(r.seed_failed("murder relay ended", relay: "app1", relay_failure: "murder relay ended"))
      .to eq("the relay on app1 failed (murder relay ended); ")
    expect(r.seed_failed(nil, relay: "app1", relay_failure: nil)).to eq("")
  end

  it "refuses a remote murder path that is relative, starts with ~ or holds whitespace, naming the setting" do
    expect(s.remote_murder_path("/srv/app/shared/murder/")).to eq("/srv/app/shared/murder")
    { "~/app/shared/murder" => /must be an absolute path/, "shared/murder" => /must be an absolute path/,
      "/srv/my app/shared/murder" => /holds whitespace/ }.each do |path, message|
      expect { s.remote_murder_path(path) }.to raise_error(Capistrano::Murder::Error, /remote_murder_path.*#{message}/)
    end
  end

  # The tasks run `execute *Support.command(murder, ...)`; SSHKit quotes no
  # word of it, the command included, and :deploy_to (the default
  # remote_murder_path's root) may hold characters a shell acts on.
  it "quotes the murder binary's path and arguments for the shell SSHKit hands them to" do
    # No whitespace: Support.remote_murder_path refuses it (see #command).
    dir = File.join(tmpdir, "R&D$(touch${IFS}#{tmpdir}/ran);x")
    FileUtils.mkdir_p(dir)
    murder = File.join(dir, "murder")
    File.write(murder, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    File.chmod(0o755, murder)
    line = SSHKit::Command.new(*s.command(murder, "stop", "--pidfile", "a b;c")).to_command
    out, status = Open3.capture2e("sh", "-c", line)
    expect(status).to be_success, out
    expect(out).to eq("stop\n--pidfile\na b;c\n")
    expect(File.exist?(File.join(tmpdir, "ran"))).to be(false)
  end

  it "tells why a remote command failed by murder's last word, a full disk or an error, else the first line" do
    failed = ->(text) { RuntimeError.new(text) }
    expect(s.reason(failed.call("Exception while executing as root@h1: murder exit status: 1\n" \
                                "murder: checking\nmurder: /srv/a: No space left on device\n")))
      .to eq("murder: /srv/a: No space left on device")
    expect(s.reason(failed.call("h1: /srv/releases/v4 is not empty\nmore\n"))).to eq("h1: /srv/releases/v4 is not empty")
  end

  # A host's `murder peer` killed (the OOM killer, an operator) says nothing
  # after its prompt for the ticket: the deploy named that prompt as the
  # host's failure. SSHKit's own message, for the command a deploy runs,
  # with the status the remote shell gives (128 + 9).
  it "tells a murder killed by a signal from its exit status, not from its prompt for the ticket" do
    words = Murder::Remote.peer_command(murder: "/srv/app/murder/murder", sha256: "ab" * 32,
                                        releases: "/srv/app/releases", dest: "/srv/app/releases/v5",
                                        args: ["--progress", "json"])
    failed = lambda do |stderr, status|
      command = SSHKit::Command.new(*words)
      command.on_stderr(nil, stderr)
      command.exit_status = status
    rescue SSHKit::Command::Failed => e
      e
    end
    expect(s.reason(failed.call("#{Murder::Remote::PROMPT}\n", 137))).to eq("murder was killed by SIGKILL (exit 137)")
    expect(s.reason(failed.call("#{Murder::Remote::PROMPT}\nmurder: /srv/a: No space left on device\n", 1)))
      .to eq("murder: /srv/a: No space left on device")
  end
end
