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

      def default_binary
        built = File.expand_path("../../../target/release/murder", __dir__)
        return built if File.executable?(built)

        ENV.fetch("PATH", "").split(":").map { |d| File.join(d, "murder") }.find { |f| File.executable?(f) } ||
          raise(Error, "no murder binary found: build it (rake cli) or set :murder_binary")
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
    # The deployer's view of a distribution: one live line from the
    # tracker's /stats.json while peers download, and a summary after.
    class Progress
      def initialize(tracker_host, port, hosts, out: $stderr)
        @tracker_host = tracker_host
        @port = port
        @hosts = hosts
        @out = out
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
        stats = Support.stats(@tracker_host, @port) or return nil
        torrent = stats["torrents"].max_by { |t| t["peers"].size } or return nil
        total = torrent["total_length"].to_i
        downloaders = torrent["peers"].reject { |p| p["downloaded"].to_i.zero? && p["left"].to_i.zero? }
        done_bytes = downloaders.sum { |p| total - p["left"].to_i }
        all_bytes = total * @hosts
        elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - @started
        rate = done_bytes / [elapsed, 1e-3].max
        eta = rate.positive? ? ((all_bytes - done_bytes) / rate).round : "?"
        done_hosts = downloaders.count { |p| p["left"].to_i.zero? }
        format("murder: %d/%d hosts done, %s of %s, %s/s, eta %s s", done_hosts, @hosts,
               Support.human(done_bytes), Support.human(all_bytes), Support.human(rate), eta)
      end

      # Prints time, bytes, the slowest host and the rate per host.
      def self.summary(results, seconds, out: $stderr)
        done = results.compact.reject { |_, s| s.nil? }
        return if done.empty?

        slowest_host, slowest = done.max_by { |_, s| s["seconds"].to_f }
        bytes = slowest["bytes"].to_i
        out.puts if out.tty?
        out.puts format("murder: %d hosts received %s each in %.1f s; slowest %s (%.1f s); %s/s per host",
                        done.size, Support.human(bytes), seconds, slowest_host, slowest["seconds"].to_f,
                        Support.human(bytes / [seconds, 1e-3].max))
      end
    end
  end
end
