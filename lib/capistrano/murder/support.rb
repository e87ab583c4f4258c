# frozen_string_literal: true

require "digest"
require "json"
require "net/http"
require "shellwords"

module Capistrano
  module Murder
    # A problem with the arguments or a host; the message names which.
    class Error < StandardError; end

    # What the murder: tasks share: validated arguments, paths, roles and
    # escaped command lines (SSHKit joins arguments with spaces and does not
    # quote them, so every argument goes through Shellwords here).
    module Support
      TAG = /\A[A-Za-z0-9][A-Za-z0-9._-]*\z/

      module_function

      # The murder binary the gem built (see Murder.binary).
      def default_binary
        require "murder/binary"
        ::Murder.binary
      rescue ::Murder::Error => e
        raise Error, "#{e.message}, or set :murder_binary"
      end

      # Whether :murder_compression asks for gzip: :gzip (the default) or
      # :none, for releases that are compressed already (gzip gains nothing
      # there and costs seconds on every host).
      def gzip?(compression)
        case compression.to_s
        when "gzip" then true
        when "none" then false
        else raise Error, "murder_compression must be :gzip or :none, not #{compression.inspect}"
        end
      end

      # Each argument quoted for the remote shell.
      def args(*words)
        words.flatten.map { |w| w.to_s.shellescape }
      end

      def tag(value)
        tag = value.to_s
        raise Error, "tag is required: cap ... tag=NAME (or set :default_tag)" if tag.empty?
        unless tag.match?(TAG)
          raise Error, "tag #{tag.inspect} is not allowed: use letters, digits, '.', '_' and '-' (no '/' or shell characters)"
        end

        tag
      end

      def absolute_path(value, name)
        path = value.to_s
        raise Error, "#{name} is required" if path.empty?
        raise Error, "#{name} #{path.inspect} must be an absolute path" unless path.start_with?("/")
        raise Error, "#{name} #{path.inspect} must not contain '..'" if path.split("/").include?("..")
        raise Error, "#{name} #{path.inspect} holds control characters" if path.match?(/[[:cntrl:]]/)

        path.chomp("/").then { |p| p.empty? ? "/" : p }
      end

      # Extracts the archive PAYLOAD (a tar, gzip'd or not: tar tells which)
      # into DEST on the host behind BACKEND
      # (an SSHKit backend, inside `on`). GNU tar's defaults keep every write
      # inside: members with '..' are refused, leading '/' is stripped, and a
      # member under a symlink the archive made fails (tar creates such links
      # only at the end). It extracts into a staging directory beside DEST and
      # moves it into place, so a failure leaves neither a half release at
      # DEST nor the staging directory.
      def extract_release(backend, payload, dest)
        staging = "#{dest}.murder-extract"
        backend.execute :rm, "-rf", *args(staging)
        backend.execute :mkdir, "-p", *args(staging)
        begin
          backend.execute :tar, "-xf", *args(payload), "--no-same-owner", "--no-overwrite-dir", "-C", *args(staging)
        rescue StandardError
          backend.execute :rm, "-rf", *args(staging)
          raise
        end
        backend.execute :rm, "-rf", *args(dest)
        backend.execute :mkdir, "-p", *args(File.dirname(dest))
        backend.execute :mv, *args(staging, dest)
      end

      def truthy?(name)
        value = ENV.fetch(name, nil)
        !value.nil? && !%w[0 false no].include?(value.downcase)
      end

      # The address a host announces: its murder_ip property, else its
      # name when that is an IP address, else none (the route to the tracker).
      def announce_ip(host)
        ip = host.properties.fetch(:murder_ip) || host.hostname
        ip.to_s.match?(/\A[\d.]+\z|:/) ? ip.to_s : nil
      end

      def stats(host, port)
        JSON.parse(Net::HTTP.get(URI("http://#{host}:#{port}/stats.json")))
      rescue StandardError
        nil
      end

      # :murder_reuse as the `murder peer --reuse-mode` it means: "link"
      # (hard links), "copy", or nil for :none (no reuse).
      def reuse_mode(value)
        case value.to_s
        when "link", "copy" then value.to_s
        when "none" then nil
        else raise Error, "murder_reuse must be :link, :copy or :none, not #{value.inspect}"
        end
      end

      # Whether :murder_release ships a tree (:tree) or one archive (:archive).
      def tree?(value)
        case value.to_s
        when "tree" then true
        when "archive" then false
        else raise Error, "murder_release must be :tree or :archive, not #{value.inspect}"
        end
      end

      # Installs the murder binary on the host behind BACKEND (inside `on`),
      # through a temporary name, so a host never runs half a binary, and
      # records its SHA-256 beside it (murder.sha256) once it is in place.
      def install_binary(backend, binary, dir, sha256 = Digest::SHA256.file(binary).hexdigest)
        backend.execute :mkdir, "-p", *args(dir, "#{dir}/run")
        backend.upload! binary, "#{dir}/murder.new"
        backend.execute :chmod, "755", *args("#{dir}/murder.new")
        backend.execute :mv, "-f", *args("#{dir}/murder.new", "#{dir}/murder")
        backend.execute :sh, "-c", *args('echo "$1" > "$2.new" && mv -f "$2.new" "$2"', "sh", sha256, "#{dir}/murder.sha256")
      end

      def human(bytes)
        units = %w[B KiB MiB GiB TiB]
        value = bytes.to_f
        unit = 0
        while value >= 1024 && unit < units.size - 1
          value /= 1024
          unit += 1
        end
        unit.zero? ? "#{bytes} B" : format("%.1f %s", value, units[unit])
      end
    end
  end
end

module Capistrano
  module Murder
    # The deployer's view of a distribution: one live line a second from
    # the tracker's view of the swarm while hosts download, and a summary
    # from what every host reported.
    class Progress
      # +stats+ returns the tracker's stats (Murder::Tracker#stats, or
      # /stats.json of a tracker host).
      def initialize(hosts, out: $stderr, &stats)
        @hosts = hosts
        @out = out
        @stats = stats
        @started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      def watch
        loop do
          sleep 1
          line = current_line or next
          if @out.tty?
            @out.print("\r#{line}   ")
          else
            @out.puts(line)
          end
        end
      end

      def current_line
        stats = @stats.call or return nil
        torrent = stats["torrents"].max_by { |t| t["peers"].size } or return nil
        total = torrent["total_length"].to_i
        downloaders = torrent["peers"].reject { |p| p["downloaded"].to_i.zero? && p["left"].to_i.zero? }
        left = downloaders.sum { |p| p["left"].to_i }
        missing_hosts = [@hosts - downloaders.size, 0].max
        all_left = left + missing_hosts * total
        elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - @started
        received = downloaders.sum { |p| p["downloaded"].to_i }
        rate = received / [elapsed, 1e-3].max
        eta = rate.positive? ? (all_left / rate).round : "?"
        done_hosts = downloaders.count { |p| p["left"].to_i.zero? }
        format("murder: %d/%d hosts done, %s still missing, %s/s, eta %s s", done_hosts, @hosts,
               Support.human(all_left), Support.human(rate), eta)
      end

      def self.median(values)
        sorted = values.sort
        return 0 if sorted.empty?

        sorted.size.odd? ? sorted[sorted.size / 2] : (sorted[sorted.size / 2 - 1] + sorted[sorted.size / 2]) / 2.0
      end

      # Prints what every host received (and of it, what it reused and what
      # it downloaded), the phases of the slowest host, and how long making
      # the torrent took here.
      def self.summary(results, seconds, hash_seconds: nil, torrent: nil, out: $stderr)
        done = results.compact.reject { |_, s| s.nil? }
        return if done.empty?

        slowest_host, slowest = done.max_by { |_, s| s["seconds"].to_f }
        bytes = slowest["bytes"].to_i
        reused = median(done.map { |_, s| s["reused_bytes"].to_i })
        downloaded = median(done.map { |_, s| s["downloaded"].to_i })
        phases = slowest["phases"] || {}
        out.puts if out.tty?
        line = format("murder: %d hosts received %s each in %.1f s; slowest %s (%.1f s: check %.2f s, swarm %.2f s, " \
                      "place %.2f s); per host %s reused, %s downloaded (medians)",
                      done.size, Support.human(bytes), seconds, slowest_host, slowest["seconds"].to_f,
                      phases["check"].to_f, phases["swarm"].to_f, phases["place"].to_f,
                      Support.human(reused), Support.human(downloaded))
        line += format("; torrent made in %.2f s", hash_seconds) if hash_seconds
        line += format(" (%d pieces of %s)", torrent.piece_count, Support.human(torrent.piece_length)) if torrent
        out.puts line
      end

      # One line per host: what it reused, what it downloaded, how long each
      # phase took there.
      def self.hosts(results, out: $stderr)
        results.compact.sort.each do |host, s|
          next if s.nil?

          phases = s["phases"] || {}
          out.puts format("murder:   %s: %s reused, %s downloaded, %.2f s (check %.2f, swarm %.2f, place %.2f)",
                          host, Support.human(s["reused_bytes"].to_i), Support.human(s["downloaded"].to_i),
                          s["seconds"].to_f, phases["check"].to_f, phases["swarm"].to_f, phases["place"].to_f)
        end
      end
    end
  end
end
