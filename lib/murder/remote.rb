# frozen_string_literal: true

require "fileutils"
require "openssl"
require "json"
require "shellwords"
require "zlib"
require_relative "progress"

module Murder
  # One SSH command per host for a whole download: check the murder
  # binary, take the deploy ticket on standard input, download (reusing
  # what the host holds), place the release, clean old staging areas.
  # What {RakeTask} and the Capistrano tasks run on each host; its shape
  # follows `murder peer -` (ext/murder-cli), so it is not public API.
  #
  # @api private
  module Remote
    # What `murder peer -` prints on standard error when it wants the
    # ticket (ext/murder-cli/src/ticket.rs).
    PROMPT = "murder: reading the deploy ticket from standard input"
    # What a release tag may be: letters, digits, ".", "_" and "-", not
    # starting with a punctuation character (no "/" or shell characters).
    TAG = /\A[A-Za-z0-9][A-Za-z0-9._-]*\z/
    # The exit status of the command when the host's murder is not the
    # one this deploy ships.
    OUTDATED = 97
    # Why a host failed whose command ended without murder's summary
    # (`{"event":"complete",…}`) and without an exit status: SSH sends the
    # death by a signal of the command's process as `exit-signal`, and
    # SSHKit then reports nothing at all (a success).
    NO_SUMMARY = "murder ended without its summary and without an exit status " \
                 "(it, or the shell running it, was killed by a signal)"
    # Net::SSH options under a deploy's own: a keepalive every 5 s when a
    # connection is quiet, and a host that leaves 4 unanswered fails its
    # command (about 20 s). Without them a host that stops answering
    # (power, link, partition) leaves a command waiting for ever: nothing
    # is sent on a channel that waits for output.
    SSH_KEEPALIVE = { keepalive: true, keepalive_interval: 5, keepalive_maxcount: 3 }.freeze

    # The script {.peer_command} runs with `sh -c`: `$1` murder, `$2` its
    # SHA-256, `$3` the releases directory, `$4` the staging name to keep;
    # the rest goes to `murder peer -`. The binary is current when the
    # digest recorded beside it at install (murder.sha256) is the one this
    # deploy ships: no host hashes its binary on every deploy. Exits
    # {OUTDATED} when it is not, saying what the host is ({.outdated}: the
    # deployer installs a binary only where it runs), else with the status
    # of `murder peer`.
    SCRIPT = <<~'SH'
      murder=$1 sha=$2 releases=$3 keep=$4
      shift 4
      if [ ! -x "$murder" ] || [ "$(cat "$murder.sha256" 2>/dev/null)" != "$sha" ]; then
        echo "murder-binary-outdated: $(uname -sm)" >&2
        exit 97
      fi
      mkdir -p "$releases" || exit 1
      "$murder" peer - "$@" || exit $?
      # Staging areas of earlier deploys that failed: reused by now.
      find "$releases" -mindepth 1 -maxdepth 1 -name '.*.part' ! -name "$keep" -exec rm -rf {} + 2>/dev/null
      exit 0
    SH

    module_function

    # The words of `sh -c` {SCRIPT} for one host, each quoted for the remote
    # shell (join them with spaces for a command line).
    #
    # @example
    #   Remote.peer_command(murder: "/usr/local/lib/murder/murder", sha256: sha, releases: "/srv/app/releases",
    #                       dest: "/srv/app/releases/20240101", args: ["--linger", 30]).join(" ")
    #
    # @param murder [String] the murder binary on the host
    # @param sha256 [String] the hex SHA-256 it must have
    # @param releases [String] the releases directory (made if missing;
    #   after a download, the staging areas of earlier failed deploys in it
    #   are removed)
    # @param dest [String] where the release goes (the first argument of
    #   `murder peer -`)
    # @param args [Array<#to_s>] more arguments of `murder peer`
    # @return [Array<String>] shell-escaped words
    def peer_command(murder:, sha256:, releases:, dest:, args:)
      keep = ".#{File.basename(dest)}.part"
      ["sh", "-c", SCRIPT, "murder-peer", murder, sha256, releases, keep, dest, *args].map { |w| w.to_s.shellescape }
    end

    # What `murder peer -` prints when it does not hold the base a ticket's
    # difference names (ext/murder-cli/src/ticket.rs): send it the whole
    # torrent.
    BASE_MISSING = "murder-ticket-base-missing"

    # The ticket `murder peer -` reads: a JSON header line, then the
    # torrent's bytes, zlib-compressed (a tree's torrent is mostly paths,
    # and every host's ticket crosses this machine's uplink before the swarm
    # starts); with `base`, the difference from that torrent instead (a few
    # KB for an everyday release, where the whole is hundreds), for hosts
    # that kept it (`murder peer --ticket-base`).
    #
    # @param torrent_bytes [String] the .torrent ({Torrent#to_bencode})
    # @param secret [String, nil] a closed swarm's secret ({Murder.generate_secret})
    # @param base [String, nil] the .torrent the hosts were sent last time
    # @return [String] a binary String
    def ticket(torrent_bytes, secret: nil, base: nil)
      difference, base_name = base && ::Murder.__ticket_delta(torrent_bytes.b, base.b)
      fields = if difference
                 { "torrent" => difference.bytesize, "encoding" => "zstd-delta", "base" => base_name }
               else
                 body = Zlib::Deflate.deflate(torrent_bytes.b)
                 { "torrent" => body.bytesize, "encoding" => "zlib" }
               end
      fields["secret"] = secret if secret
      "#{JSON.generate(fields)}\n".b + (difference || body).b
    end

    # Writes `bytes` to `path` whole, through a temporary name beside it (a
    # crash leaves the old file or none), making its directory: this
    # machine's records of a deploy (the binary's hosts, the ticket base).
    #
    # @param path [String]
    # @param bytes [String]
    # @return [void]
    # @raise [SystemCallError] when the directory cannot be written
    def write_atomically(path, bytes)
      FileUtils.mkdir_p(File.dirname(path))
      partial = "#{path}.#{Process.pid}.part"
      # Readable by the owner alone: a torrent tells the release's names,
      # sizes and hashes.
      File.open(partial, File::WRONLY | File::CREAT | File::TRUNC, 0o600) { |f| f.write(bytes) }
      File.rename(partial, path)
    rescue StandardError
      # A full disk or a failed rename leaves no PATH.PID.part behind.
      FileUtils.rm_f(partial) if partial
      raise
    end

    # One deploy's tickets: the difference from the torrent the hosts were
    # sent last time (kept at `record` on this machine), when there is one,
    # and the whole; which hosts had to take the whole; and keeping this
    # torrent as the next deploy's base. What the deploy strategy and
    # {RakeTask} share.
    class Tickets
      # @return [String] the ticket to send first: the difference, or the
      #   whole when there is no base (or the difference would be too large)
      attr_reader :first
      # @return [String] the whole ticket, for a host without the base
      attr_reader :whole

      # @param torrent_bytes [String] the .torrent ({Torrent#to_bencode})
      # @param secret [String, nil] the closed swarm's secret
      # @param record [String] where this machine keeps the last torrent sent
      def initialize(torrent_bytes, secret:, record:)
        @bytes = torrent_bytes
        @record = record
        @whole = Remote.ticket(torrent_bytes, secret: secret)
        base = File.file?(record) ? File.binread(record) : nil
        difference = base && Remote.ticket(torrent_bytes, secret: secret, base: base)
        @first = difference && difference != @whole ? difference : @whole
        @took_whole = []
        @lock = Mutex.new # after_failure runs on every host's thread
      end

      # The ticket to send `host` after `ticket` failed with `error`: the
      # whole one when the host lacked the difference's base, else nil.
      # Records that the host took the whole.
      #
      # @param host [#to_s]
      # @param ticket [String] the ticket that failed
      # @param error [String] what the host printed
      # @return [String, nil]
      def after_failure(host, ticket, error)
        return nil if ticket.equal?(@whole) || !error.include?(BASE_MISSING)

        @lock.synchronize { @took_whole << host.to_s }
        @whole
      end

      # Keeps this torrent as the next deploy's base (every host holds it now).
      #
      # @return [void]
      def keep
        Remote.write_atomically(@record, @bytes)
      end

      # How many hosts took which ticket, or nil when there was no difference
      # to send.
      #
      # @param hosts [Integer] the hosts of the deploy
      # @param last [String] what the base was, e.g. "the last deploy's torrent"
      # @return [String, nil]
      def summary(hosts, last:)
        return nil if @first.equal?(@whole)

        format("murder: deploy ticket %<first>s to %<with>d hosts (the difference from %<last>s), " \
               "%<whole>s to %<without>d", first: Progress.human(@first.bytesize), with: hosts - @took_whole.size, last: last,
               whole: Progress.human(@whole.bytesize), without: @took_whole.size)
      end
    end

    # Every host's vote on placing its release: a deploy places the release
    # on every host only once all of them staged it; if one fails, none is
    # placed (the others keep theirs staged, for the next deploy to reuse).
    # Thread-safe: one thread per host votes and waits.
    class Barrier
      # @param hosts [Integer] how many votes to wait for
      def initialize(hosts)
        @hosts = hosts
        @votes = {}
        @lock = Mutex.new
        @changed = ConditionVariable.new
      end

      # Records a host's vote; only its first vote counts.
      #
      # @param host [String] the host
      # @param staged [Boolean] whether it staged its release
      # @return [void]
      def vote(host, staged)
        @lock.synchronize do
          @votes[host] = staged unless @votes.key?(host)
          @changed.broadcast
        end
      end

      # Whether every host voted, and every one that it staged its release
      # (so each was told to place it). Does not wait.
      #
      # @return [Boolean]
      def unanimous?
        @lock.synchronize { @votes.size >= @hosts && @votes.values.all? }
      end

      # Waits (blocking the calling thread) for every host's vote.
      #
      # @return [Boolean] true when all staged their release
      def place?
        @lock.synchronize do
          @changed.wait(@lock) until @votes.size >= @hosts
          @votes.values.all?
        end
      end
    end

    # The stdin side of `murder peer - --wait-to-place` on one host (an
    # SSHKit interaction handler: it sees the command's output as it
    # comes): the ticket when murder asks for it, then, once murder says
    # the release is staged, the host's vote and, once every host voted,
    # `place` or `abort`. A host that fails before it stages must be voted
    # false by the caller, or the others wait forever. Without a barrier,
    # each host places as soon as it staged ({RakeTask}'s way).
    class Conversation
      # @param ticket [String] the deploy ticket ({Remote.ticket})
      # @param barrier [Barrier, nil] the deploy's barrier; nil: no vote
      # @param host [String] this host, as it votes
      def initialize(ticket, barrier, host)
        @ticket = ticket
        @barrier = barrier
        @host = host
        @stdout = +""
        @stderr = +""
        @state = :ticket
        @abort = false
      end

      # Tells the host to stop downloading (`abort` on its stdin) the next
      # time it reports, unless it staged already (then its vote stands).
      # May be called from any thread: the line goes out on the command's
      # own thread, in {#on_data}.
      #
      # @return [void]
      def abort!
        @abort = true
      end

      # SSHKit's interaction handler callback: sends the ticket on the
      # prompt, then the verdict once staged (blocking in {Barrier#place?}).
      #
      # @param _command [SSHKit::Command] the command (unused)
      # @param stream [Symbol] `:stdout` or `:stderr`
      # @param data [String] what came on it
      # @param channel [Net::SSH::Connection::Channel] the command's channel
      # @return [void]
      def on_data(_command, stream, data, channel)
        case @state
        when :ticket
          return unless stream == :stderr

          # The prompt may come in two pieces: SSH hands data on as it
          # arrives. Only its length is kept of what came before.
          @stderr = (@stderr + data)[-(PROMPT.bytesize + data.bytesize)..] || @stderr + data
          if @stderr.include?(PROMPT)
            channel.send_data(@ticket)
            @state = :staging
          end
        when :staging
          @stdout << data if stream == :stdout
          unless @stdout.include?('"event":"staged"')
            # Told to abort: the host hears it with its next report (one a
            # second). One that staged meanwhile votes instead, below.
            abort_download(channel) if @abort
            return
          end

          @barrier&.vote(@host, true)
          channel.send_data(@barrier.nil? || @barrier.place? ? "place\n" : "abort\n")
          channel.eof!
          @state = :done
        end
      end

      private

      # @api private
      def abort_download(channel)
        channel.send_data("abort\n")
        channel.eof!
        @state = :done
      end
    end

    # The hosts' conversations of one deploy, so that all of them can be
    # told to abort: those under way, and any started after.
    class Conversations
      # @return [String, nil] why the deploy aborts (nil: it does not)
      attr_reader :aborted

      def initialize
        @lock = Mutex.new
        @all = []
        @aborted = nil
      end

      # @param ticket [String] the deploy ticket ({Remote.ticket})
      # @param barrier [Barrier, nil] the deploy's barrier; nil: no vote
      # @param host [String] this host, as it votes
      # @return [Conversation] a new conversation, told to abort at once
      #   when the deploy aborts already
      def start(ticket, barrier, host)
        conversation = Conversation.new(ticket, barrier, host)
        @lock.synchronize do
          @all << conversation
          conversation.abort! if @aborted
        end
        conversation
      end

      # Tells every host to stop downloading.
      #
      # @param why [String] what failed
      # @return [void]
      def abort!(why)
        @lock.synchronize do
          @aborted ||= why
          @all.each(&:abort!)
        end
      end

      # Watches `session` (the deployer's seed) on a thread of its own: once
      # it fails, every host is told to abort, where each would otherwise
      # wait out its stall timeout and name itself, not the seed.
      #
      # @param session [::Murder::Session] a started {::Murder::Seeder}
      # @param every [Float] seconds between looks
      # @return [Thread] the watcher (kill it when the hosts are done)
      def watch(session, every: 0.2)
        Thread.new do
          sleep every while session.running?
          # Not running: failed, or stopped (then it ends without a word).
          why = session.failure
          abort!(why) if why
        end
      end
    end

    # Why a host's `murder peer` failed: its own last word on standard
    # error (not the prompt for the ticket, which every run prints first),
    # else how it ended ({.ended}), else its exit status.
    #
    # @param status [Integer] the remote command's exit status
    # @param stderr [String] what it wrote on standard error
    # @return [String]
    def failure(status, stderr)
      said = stderr.to_s.lines.grep(/murder: /).reject { |line| line.include?(PROMPT) }.last
      said&.strip || ended(status) || "exit #{status}"
    end

    # What a host whose murder is not current said it is ({SCRIPT}).
    #
    # @param stderr [String] the command's standard error (or an error
    #   message holding it)
    # @return [String, nil] its `uname -sm` ("Linux x86_64"); nil when it
    #   did not say that its murder is outdated
    def outdated(stderr)
      stderr.to_s[/murder-binary-outdated: ?(.*)$/, 1]&.strip
    end

    # A remote command's end by a signal, as the shell tells it (128 + N):
    # a `murder peer` killed (the OOM killer, an operator) says nothing.
    #
    # @param status [Integer] the exit status
    # @return [String, nil] "murder was killed by SIGKILL (exit 137)", or nil
    #   when the status is not a signal's
    def ended(status)
      name = status > 128 && Signal.signame(status - 128)
      "murder was killed by SIG#{name} (exit #{status})" if name
    end

    # How a deploy's error begins when the seed on this machine, or the
    # relay in front of it, failed: its hosts only saw their source go.
    #
    # @param why [String, nil] the seed's failure ({Session#failure})
    # @param relay [#to_s, nil] the relaying host, if any
    # @param relay_failure [String, nil] why the relay ended ({Relay#failure})
    # @return [String] the words to put first ("" when neither failed)
    def seed_failed(why, relay: nil, relay_failure: nil)
      return "the relay on #{relay} failed (#{relay_failure}); " if relay_failure
      return "the seed on this machine failed (#{why}); " if why

      ""
    end

    # What to do about hosts that never reached this machine's tracker
    # (their reasons say "no tracker answered"): the ports to open.
    #
    # @param reasons [Array<String>] the failed hosts' reasons
    # @param tracker_port [Integer]
    # @param seed_port [Integer]
    # @param settings [String] the settings that change the address and
    #   the ports, named as the caller's users set them
    # @param at [String] where the hosts must reach them
    # @return [String] the words to put last ("" when no host failed so)
    def unreachable_hint(reasons, tracker_port, seed_port, settings, at: "this machine")
      return "" unless reasons.any? { |why| why.include?("no tracker answered") }

      " (the hosts must reach #{at} on TCP ports #{tracker_port} (the tracker) and #{seed_port} " \
        "(the seed): open them, or set #{settings})"
    end

    # The engine's report lines in a command's output.
    #
    # @param output [String, nil] what `murder peer --progress json` printed
    # @return [Array<Object>] each line that is JSON, parsed (the engine's
    #   reports are Hashes with an "event"); other lines are skipped
    def reports(output)
      output.to_s.lines.filter_map do |line|
        JSON.parse(line)
      rescue JSON::ParserError
        nil
      end
    end

    # @param path [String] a local file
    # @return [String] its hex SHA-256 (OpenSSL's: it uses the CPU's SHA
    #   instructions, where Digest's took 0.2 s of every deploy for a 43 MB
    #   binary)
    # @raise [SystemCallError] when it cannot be read
    def sha256(path)
      OpenSSL::Digest::SHA256.file(path).hexdigest
    end
  end
end
