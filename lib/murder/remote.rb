# frozen_string_literal: true

require "digest"
require "json"
require "shellwords"

module Murder
  # One SSH command per host for a whole download: check the murder
  # binary, take the deploy ticket on standard input, download (reusing
  # what the host holds), place the release, clean old staging areas.
  module Remote
    # What `murder peer -` prints on standard error when it wants the
    # ticket (ext/murder-cli/src/ticket.rs).
    PROMPT = "murder: reading the deploy ticket from standard input"
    # The exit status of the command when the host's murder is not the
    # one this deploy ships.
    OUTDATED = 97

    # $1 murder, $2 its SHA-256, $3 the releases directory, $4 the staging
    # name to keep; the rest goes to `murder peer`. The binary is current
    # when the digest recorded beside it at install (murder.sha256) is the
    # one this deploy ships: no host hashes its binary on every deploy.
    SCRIPT = <<~'SH'
      murder=$1 sha=$2 releases=$3 keep=$4
      shift 4
      if [ ! -x "$murder" ] || [ "$(cat "$murder.sha256" 2>/dev/null)" != "$sha" ]; then
        echo "murder-binary-outdated" >&2
        exit 97
      fi
      mkdir -p "$releases" || exit 1
      "$murder" peer - "$@" || exit $?
      # Staging areas of earlier deploys that failed: reused by now.
      find "$releases" -mindepth 1 -maxdepth 1 -name '.*.part' ! -name "$keep" -exec rm -rf {} + 2>/dev/null
      exit 0
    SH

    module_function

    # The arguments of `sh -c` for one host.
    def peer_command(murder:, sha256:, releases:, dest:, args:)
      keep = ".#{File.basename(dest)}.part"
      ["sh", "-c", SCRIPT, "murder-peer", murder, sha256, releases, keep, dest, *args].map { |w| w.to_s.shellescape }
    end

    # The ticket `murder peer -` reads: a JSON header line, then the
    # torrent's bytes.
    def ticket(torrent_bytes)
      header = JSON.generate("torrent" => torrent_bytes.bytesize)
      "#{header}\n".b + torrent_bytes.b
    end

    # Every host's vote on placing its release: a deploy places the release
    # on every host only once all of them staged it; if one fails, none is
    # placed (the others keep theirs staged, for the next deploy to reuse).
    class Barrier
      def initialize(hosts)
        @hosts = hosts
        @votes = {}
        @lock = Mutex.new
        @changed = ConditionVariable.new
      end

      def vote(host, staged)
        @lock.synchronize do
          @votes[host] = staged unless @votes.key?(host)
          @changed.broadcast
        end
      end

      # Waits for every host's vote; true when all staged their release.
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
    # the release is staged and every host voted, `place` or `abort`.
    class Conversation
      def initialize(ticket, barrier, host)
        @ticket = ticket
        @barrier = barrier
        @host = host
        @stdout = +""
        @state = :ticket
      end

      def on_data(_command, stream, data, channel)
        case @state
        when :ticket
          if stream == :stderr && data.include?(PROMPT)
            channel.send_data(@ticket)
            @state = :staging
          end
        when :staging
          return unless stream == :stdout

          @stdout << data
          return unless @stdout.include?('"event":"staged"')

          @barrier.vote(@host, true)
          channel.send_data(@barrier.place? ? "place\n" : "abort\n")
          channel.eof!
          @state = :done
        end
      end
    end

    # The engine's report lines (JSON) in a command's output.
    def reports(output)
      output.to_s.lines.filter_map do |line|
        JSON.parse(line)
      rescue JSON::ParserError
        nil
      end
    end

    def sha256(path)
      Digest::SHA256.file(path).hexdigest
    end
  end
end
