# frozen_string_literal: true

require "rake"
require "rake/tasklib"
require "socket"
require "murder"
require "murder/remote"
require "murder/relay"
require "murder/progress"

module Murder
  # Rake tasks for projects without Capistrano, in the idiom of
  # `RSpec::Core::RakeTask`: a task that ships a directory to hosts through a
  # swarm seeded from this machine.
  #
  # `rake ship` makes the torrent of {#source} (piece-aligned; hashing only
  # files changed since the last run), tracks and seeds it in this process,
  # starts `murder peer` on every host over SSH (net-ssh; one command per
  # host, the torrent on its standard input), shows a line of progress a
  # second, and prints what every host reused and downloaded. The release
  # lands at {#destination} on a host only once it is complete and verified
  # there. It also defines `rake murder:torrent[PATH,TRACKER]` (make
  # PATH.torrent) and `rake murder:tracker[PORT,DIR]` (run a tracker until
  # interrupted) for scripts, once for all RakeTasks.
  #
  # Hosts need only SSH: the murder binary ({#binary}) is copied to
  # {#remote_binary} on a host that lacks it or has another one.
  #
  # @example Rakefile
  #   require "murder/rake_task"
  #
  #   Murder::RakeTask.new(:ship) do |t|
  #     t.source = "build/"
  #     t.hosts = %w[app1.example.com deploy@app2.example.com]
  #     t.destination = "/srv/app/releases/%{tag}"
  #   end
  class RakeTask < ::Rake::TaskLib
    # @return [Symbol, String] the task's name (default `:ship`)
    attr_accessor :name
    # @return [String, nil] the task's description (nil: one naming
    #   {#source} and the number of hosts); ignored when a `desc` comes just
    #   before the RakeTask, which then describes the task
    attr_accessor :description
    # @return [String] the directory to ship (required)
    attr_accessor :source
    # @return [Array<String>] names (globs such as ".git" or "*.log") of
    #   files and directories under {#source} that are not shipped, at any
    #   depth (default `[".git"]`: a checkout never ships its repository)
    attr_accessor :exclude
    # @return [Array<String>] hosts, as `user@host` or `host` (required)
    attr_accessor :hosts
    # @return [String] where the release goes on each host (required), a
    #   `format` string: `%{tag}` is replaced by {#tag} (write `%%` for `%`)
    attr_accessor :destination
    # @return [String, nil] the release's name (nil: the UTC time as
    #   YYYYMMDDHHMMSS): letters, digits, ".", "_" and "-", starting with a
    #   letter or a digit, else the task
    #   fails with {Murder::InvalidArgument} before it touches any host
    attr_accessor :tag
    # @return [String, nil] directory of earlier releases on the hosts to
    #   reuse content from, where failed deploys' staging areas are cleaned
    #   up (nil: the destination's parent)
    attr_accessor :reuse
    # @return [String] SSH user when a host names none (default: root)
    attr_accessor :user
    # @return [Hash] options for `Net::SSH.start` (keys, known hosts, ...;
    #   keepalives are on unless these say `keepalive: false`)
    attr_accessor :ssh_options
    # @return [String] where the murder binary lives on the hosts (default
    #   /usr/local/lib/murder/murder)
    attr_accessor :remote_binary
    # @return [String, nil] the murder binary to install there (nil: the
    #   gem's, {Murder.binary}); built for the hosts (a host whose
    #   `uname -sm` does not fit its header fails, and gets nothing)
    attr_accessor :binary
    # @return [String, nil] this machine's address the hosts reach (nil:
    #   the local address of the route to the first host)
    attr_accessor :ip
    # @return [Integer] the tracker's port here (default 0: any free port)
    attr_accessor :port
    # @return [Integer] the seed's port here (default 0: any free port),
    #   for a firewall between this machine and the hosts to open
    attr_accessor :seed_port
    # @return [Integer] seconds hosts keep seeding once they are done
    #   (default 30)
    attr_accessor :linger
    # @return [String] where this machine keeps its hash cache (default
    #   tmp/murder/hashes.json)
    attr_accessor :cache
    # @return [String, nil] a host (`user@host` or `host`, one of {#hosts}
    #   or not) that relays this machine's tracker and seed to the hosts,
    #   over SSH, for hosts that cannot open connections to this machine (a
    #   deployer behind NAT, a CI runner); nil (the default): the hosts
    #   connect here. The hosts reach it at its address (the name as this
    #   machine resolves it), on {#port} and the seed's port
    attr_accessor :relay
    # @return [Boolean] ship in a closed swarm (default true): a fresh
    #   secret per run, sent to each host over SSH; peers without it get
    #   nothing and the wire is encrypted. false: plain BitTorrent
    attr_accessor :closed

    # Defines the task `name` (and `murder:torrent`, `murder:tracker` unless
    # they are defined already); the block, if given, configures it first.
    #
    # @param name [Symbol, String] the task's name
    # @yield [task] to set its attributes
    # @yieldparam task [Murder::RakeTask] this task
    def initialize(name = :ship)
      super()
      @name = name
      @hosts = []
      @user = "root"
      @ssh_options = {}
      @remote_binary = "/usr/local/lib/murder/murder"
      @port = 0
      @seed_port = 0
      @linger = 30
      @cache = "tmp/murder/hashes.json"
      @exclude = [".git"]
      @closed = true
      yield self if block_given?
      define
    end

    # Ships {#source} to every host (what the task runs): see the class
    # comment. Blocks until every host is done; the tracker and the seeder
    # serve from native threads meanwhile, and each host has a Ruby thread
    # of its own. The tracker and the seeder are stopped when it returns or
    # raises.
    #
    # @return [Hash{String => Hash}] each host's summary ("reused_bytes",
    #   "downloaded", "seconds", "phases", ...: see {Download#run}), by host
    # @raise [Murder::InvalidArgument] when {#source}, {#hosts} or
    #   {#destination} is not set, or this machine's address towards the
    #   first host cannot be told (set {#ip})
    # @raise [Murder::Error] naming every host that failed and why (its SSH
    #   error, or murder's last message there), or when there is no murder
    #   binary ({Murder.binary})
    # @raise [Murder::FileError, Murder::InvalidArgument] from making the
    #   torrent ({Torrent.create}) or starting the tracker or the seeder
    # @raise [SystemCallError] when {#binary} cannot be read
    # @raise [Murder::Error] when net-ssh or net-scp is not installed
    def ship
      raise InvalidArgument, "#{name}: set source, hosts and destination" unless source && !hosts.empty? && destination

      release_tag = tag || Time.now.utc.strftime("%Y%m%d%H%M%S")
      unless release_tag.to_s.match?(Remote::TAG)
        raise InvalidArgument, "#{name}: tag #{release_tag.to_s.inspect} is not allowed: use letters, digits, " \
                               "'.', '_' and '-', starting with a letter or a digit (no '/' or shell characters)"
      end
      dest = format(destination, tag: release_tag)
      require_ssh
      # Through a relay, the hosts reach this machine at the relay's
      # address, on the same port numbers.
      address = relay ? relay_address : ip || local_address_towards(host_name(hosts.first))
      tracker = Tracker.new(port: port, interval: 1).start
      torrent = Torrent.create(source, tracker: "#{address}:#{tracker.port}", align: true, hash_cache: cache,
                                       exclude: exclude)
      secret = Murder.generate_secret if closed
      tracker.allow(torrent, secret: secret)
      # Through a relay the seed announces to the tracker here; the torrent
      # names the relay, for the hosts.
      seeder = Seeder.new(torrent, source, ip: address, port: seed_port, lazy_check: true, secret: secret,
                                           announce_to: relay ? ["127.0.0.1:#{tracker.port}"] : []).start
      relaying = relay && start_relay([tracker.port, seeder.port])
      watcher = Thread.new { Progress.new(hosts.size) { tracker.stats }.watch }
      # The seed failing (a file changed under it) stops every host's
      # download at once, instead of each waiting out its stall timeout.
      conversations = Remote::Conversations.new
      seed_watch = conversations.watch(seeder)
      relay_watch = relaying && conversations.watch(relaying)
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      results = run_peers(torrent, dest, secret, conversations)
      failed = results.select { |_, r| r.is_a?(String) }
      unless failed.empty?
        # The seed's failure comes first: the hosts only name its effect.
        seed = Remote.seed_failed(conversations.aborted || seeder.failure, relay: relay,
                                                                            relay_failure: relaying&.failure)
        at, settings = relay ? ["the relay on #{relay}", "port and seed_port"] : ["this machine", "ip, port and seed_port"]
        hint = Remote.unreachable_hint(failed.values, tracker.port, seeder.port, settings, at: at)
        raise Error, "murder: #{seed}failed on #{failed.map { |h, why| "#{h}: #{why}" }.join('; ')}#{hint}"
      end

      @tickets.keep
      line = @tickets.summary(hosts.size, last: "the last ship's torrent")
      warn line if line

      watcher.kill
      Progress.hosts(results)
      Progress.summary(results, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, torrent: torrent)
      results
    ensure
      watcher&.kill
      seed_watch&.kill
      relay_watch&.kill
      relaying&.stop
      # The tracker stops even if stopping the seeder raised.
      begin
        seeder&.stop
      ensure
        tracker&.stop
      end
    end

    private

    # Defines the task and the scripting tasks.
    #
    # @api private
    # @return [void]
    def define
      desc(description || "Ship #{source} to #{hosts.size} hosts through murder") unless ::Rake.application.last_description
      task(name) { ship }
      define_scripting_tasks
    end

    # Defines `murder:torrent` and `murder:tracker`, once per Rake
    # application.
    #
    # @api private
    # @return [void]
    def define_scripting_tasks
      return if ::Rake::Task.task_defined?("murder:torrent")

      namespace :murder do
        desc "Make PATH.torrent of a file or a directory (aligned) for TRACKER (default 127.0.0.1:8998)"
        task :torrent, [:path, :tracker] do |_, args|
          path = args[:path] or raise InvalidArgument, "usage: rake murder:torrent[PATH,TRACKER]"
          torrent = Torrent.create(path, tracker: args[:tracker] || "127.0.0.1:#{Tracker::DEFAULT_PORT}",
                                         align: File.directory?(path))
          out = "#{path.chomp('/')}.torrent"
          torrent.write(out)
          puts "#{out}: #{torrent.info_hash}, #{Progress.human(torrent.data_length)} in #{torrent.piece_count} pieces"
        end

        desc "Run a tracker on PORT (default 8998), allowing the .torrent files in DIR, until interrupted"
        task :tracker, [:port, :dir] do |_, args|
          tracker = Tracker.new(port: args[:port] || Tracker::DEFAULT_PORT, allow_dir: args[:dir]).start
          puts "murder tracker on #{tracker.announce_url} (Ctrl-C stops it)"
          $stdout.flush
          sleep
        rescue Interrupt
          nil
        ensure
          tracker&.stop
        end
      end
    end

    # net-ssh and net-scp come with Capistrano (through sshkit); a project
    # without it names them in its Gemfile. Checked before anything starts.
    #
    # @api private
    # @return [void]
    # @raise [Murder::Error] when either cannot be loaded
    def require_ssh
      require "net/ssh"
      require "net/scp"
    rescue LoadError => e
      raise Error, "#{name}: Murder::RakeTask needs the net-ssh and net-scp gems " \
                   "(add gem \"net-ssh\" and gem \"net-scp\" to the Gemfile): #{e.message}"
    end

    # @api private
    # @param host [String] `user@host` or `host`
    # @return [String] the host
    def host_name(host) = host.to_s.split("@").last

    # @api private
    # @param host [String] `user@host` or `host`
    # @return [String] the user, or {#user}
    def host_user(host) = host.to_s.include?("@") ? host.to_s.split("@").first : user

    # One thread per host: install the binary if it is not current, then
    # one `murder peer -` with the ticket on its standard input.
    #
    # @api private
    # @param torrent [Murder::Torrent] the release's torrent
    # @param dest [String] where the release goes on each host
    # @param secret [String, nil] the closed swarm's secret
    # @param conversations [Remote::Conversations] this ship's, to stop the
    #   hosts when the seed fails
    # @return [Hash{String => Hash, String}] by host, its summary, or why it
    #   failed
    def run_peers(torrent, dest, secret, conversations)
      sha = Remote.sha256(binary || Murder.binary)
      # Hosts that kept the last ship's torrent get the difference from it;
      # the others say so and get the whole one.
      @tickets = Remote::Tickets.new(torrent.to_bencode, secret: secret, record: ticket_base_record)
      releases = reuse || File.dirname(dest)
      threads = [] # filled one by one: an interrupt may come while they start
      hosts.each do |host|
        threads << Thread.new do
          # Keepalives (under the task's own options): a silent host fails.
          Net::SSH.start(host_name(host), host_user(host), **Remote::SSH_KEEPALIVE, **ssh_options) do |ssh|
            [host.to_s, peer_on(ssh, host, sha, @tickets, releases, dest, conversations)]
          end
        rescue StandardError => e
          [host.to_s, e.message.lines.first.to_s.strip]
        end
      end
      threads.map(&:value).to_h
    ensure
      # Interrupted (a Timeout or Ctrl-C in a library caller): the hosts
      # are told to abort, then their threads end (2 s for all of them),
      # closing each SSH session, so no host goes on to place the release.
      if threads&.any?(&:alive?)
        conversations.abort!("the ship was interrupted")
        deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 2
        threads.each do |t|
          begin
            t.join([deadline - Process.clock_gettime(Process::CLOCK_MONOTONIC), 0].max)
          rescue Exception # what ended that thread is not ours to raise: go on ending the rest
            nil
          end
          t.kill if t.alive?
        end
      end
    end

    # Runs the download on one host, installing the binary and trying once
    # more when the host's is not current, and sending the next ticket
    # (the whole torrent) when the host does not hold the first's base.
    #
    # @api private
    # @param ssh [Net::SSH::Connection::Session] the host's connection
    # @param host [String] the host, as in {#hosts}
    # @param sha [String] the hex SHA-256 of the binary this deploy ships
    # @param tickets [Remote::Tickets] this ship's tickets
    # @param releases [String] the releases directory there
    # @param dest [String] where the release goes there
    # @param conversations [Remote::Conversations] this ship's
    # @return [Hash, String] the summary Hash, or a String saying why it failed
    def peer_on(ssh, host, sha, tickets, releases, dest, conversations)
      # --wait-to-place: murder listens on its standard input while it
      # downloads (`abort`), and places once told to (at once, here: each
      # host places its own release as soon as it is staged).
      args = ["--reuse", releases, "--linger", linger, "--progress", "json", "--wait-to-place",
              "--ticket-base", File.join(releases, ".murder-ticket-base.torrent")]
      command = Remote.peer_command(murder: remote_binary, sha256: sha, releases: releases, dest: dest, args: args).join(" ")
      ticket = tickets.first
      installed = false
      loop do
        status, out, err = exec_conversing(ssh, command, conversations.start(ticket, nil, host.to_s))
        return Remote.reports(out).find { |e| e["event"] == "complete" } || "no summary" if status.zero?

        if status == Remote::OUTDATED
          return "could not install murder" if installed

          wrong = Binary.mismatch(binary || Murder.binary, { host.to_s => Remote.outdated(err) },
                                  setting: "the task's binary (or MURDER_BINARY)")
          return wrong if wrong

          install(ssh, sha)
          installed = true
        elsif (whole = tickets.after_failure(host, ticket, err))
          ticket = whole
        else
          return Remote.failure(status, err)
        end
      end
    end

    # Where this machine keeps the torrent it shipped last (the base of the
    # next tickets' difference): beside the hash cache, one per task.
    #
    # @api private
    # @return [String]
    def ticket_base_record = File.join(File.dirname(cache), "ticket-base-#{name}.torrent")


    # Runs `command` over `ssh`, with `conversation` on its standard input:
    # the ticket once murder asks for it ({Remote::PROMPT}), `abort` if the
    # seed fails, `place` once the release is staged.
    #
    # @api private
    # @param ssh [Net::SSH::Connection::Session] the host's connection
    # @param command [String] the command line
    # @param conversation [Remote::Conversation] what to say to it
    # @return [Array(Integer, String, String)] exit status (1 when none came),
    #   standard output, standard error
    # @raise [Murder::Error] when the command could not be started
    def exec_conversing(ssh, command, conversation)
      out = +""
      err = +""
      status = signal = nil
      ssh.open_channel do |channel|
        channel.exec(command) do |_, ok|
          raise Error, "#{command}: could not run" unless ok

          channel.on_data do |ch, data|
            out << data
            conversation.on_data(nil, :stdout, data, ch)
          end
          channel.on_extended_data do |ch, _, data|
            err << data
            conversation.on_data(nil, :stderr, data, ch)
          end
          channel.on_request("exit-status") { |_, data| status = data.read_long }
          # A remote shell killed by a signal sends its name instead.
          channel.on_request("exit-signal") { |_, data| signal = data.read_string }
        end
      end
      ssh.loop
      return [1, out, err + "\nmurder: the remote shell running murder was killed by SIG#{signal}\n"] if signal && !status

      [status || 1, out, err]
    end

    # Copies the binary to {#remote_binary} through a temporary name and
    # records its SHA-256 beside it.
    #
    # @api private
    # @param ssh [Net::SSH::Connection::Session] the host's connection
    # @param sha [String] the binary's hex SHA-256
    # @return [void]
    def install(ssh, sha)
      dir = File.dirname(remote_binary)
      ssh.exec!("mkdir -p #{dir.shellescape}")
      ssh.scp.upload!(binary || Murder.binary, "#{remote_binary}.new")
      ssh.exec!("chmod 755 #{remote_binary.shellescape}.new && mv -f #{remote_binary.shellescape}.new " \
                "#{remote_binary.shellescape} && echo #{sha} > #{remote_binary.shellescape}.sha256")
    end

    # Starts the relay on {#relay}, installing the binary there first when
    # it has another (as a host's download does).
    #
    # @api private
    # @param ports [Array<Integer>] the tracker's and the seed's here
    # @return [Murder::Relay] started
    # @raise [Murder::Error] naming the relay and why it did not start
    def start_relay(ports)
      sha = Remote.sha256(binary || Murder.binary)
      ssh = [host_name(relay), host_user(relay), Remote::SSH_KEEPALIVE.merge(ssh_options)]
      installed = false
      begin
        Relay.new(relay, ssh: ssh, murder: remote_binary, sha256: sha, ports: ports).start
      rescue Relay::Outdated => e
        raise if installed

        wrong = Binary.mismatch(binary || Murder.binary, { relay.to_s => e.uname },
                                setting: "the task's binary (or MURDER_BINARY)")
        raise Error, wrong if wrong

        Net::SSH.start(*ssh[0, 2], **ssh[2]) { |session| install(session, sha) }
        installed = true
        retry
      end
    end

    # The address the hosts reach {#relay} at: its name as this machine
    # resolves it.
    #
    # @api private
    # @return [String]
    # @raise [Murder::InvalidArgument] when it cannot be told
    def relay_address
      Addrinfo.tcp(host_name(relay), 0).ip_address
    rescue SocketError => e
      raise InvalidArgument, "#{name}: cannot tell the address of the relay #{relay} (#{e.message})"
    end

    # This machine's address on the route to `host` (no packet is sent).
    #
    # @api private
    # @param host [String] a host name or address
    # @return [String]
    # @raise [Murder::InvalidArgument] when it cannot be told
    def local_address_towards(host)
      Addrinfo.udp(host, 9).connect.local_address.ip_address
    rescue SocketError, SystemCallError => e
      raise InvalidArgument, "cannot tell this machine's address towards #{host} (#{e.message}); set ip"
    end
  end
end
