# frozen_string_literal: true

module Murder
  # The deployer's view of a distribution: one live line a second from
  # the tracker's view of the swarm while hosts download, and a summary
  # from what every host reported. Used by {RakeTask} and the Capistrano
  # tasks; everything is written to `out` ($stderr unless told otherwise).
  #
  # @example
  #   watcher = Thread.new { Murder::Progress.new(hosts.size) { tracker.stats }.watch }
  #   results = ... # each host's summary, by host
  #   watcher.kill
  #   Murder::Progress.hosts(results)
  #   Murder::Progress.summary(results, seconds, torrent: torrent)
  class Progress
    # Bytes in binary units.
    #
    # @example
    #   Murder::Progress.human(4_718_592) # => "4.5 MiB"
    #   Murder::Progress.human(512)       # => "512 B"
    #
    # @param bytes [Numeric] a number of bytes
    # @return [String] "N B" below 1 KiB, else one decimal and the largest
    #   unit up to TiB
    def self.human(bytes)
      units = %w[B KiB MiB GiB TiB]
      value = bytes.to_f
      unit = 0
      while value >= 1024 && unit < units.size - 1
        value /= 1024
        unit += 1
      end
      unit.zero? ? "#{bytes.to_i} B" : format("%.1f %s", value, units[unit])
    end

    # A watcher of `hosts` downloading hosts; the block fetches the stats.
    #
    # @param hosts [Integer] how many hosts download (hosts the tracker has
    #   not heard of yet are still checking what they hold)
    # @param seeders [Integer] how many peers of the swarm seed it from the
    #   start (the tracker cannot tell them from a host that reused the
    #   whole release: both hold everything and downloaded nothing)
    # @param out [IO] where the lines go; on a terminal each replaces the
    #   last one
    # @yield [] by {#current_line}, so once a second from {#watch}'s thread
    # @yieldreturn [Hash, nil] the tracker's stats, as {Tracker#stats} or a
    #   tracker host's `/stats.json` give them (nil: none this time)
    def initialize(hosts, seeders: 1, out: $stderr, &stats)
      @hosts = hosts
      @seeders = seeders
      @out = out
      @stats = stats
      @started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    # Prints {#current_line} every second, forever: run it in a thread and
    # kill that thread when the hosts are done. Seconds without stats print
    # nothing.
    #
    # @return [void] never returns
    # @raise [Exception] whatever the stats block raises
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

    # One line from the stats block's answer, about the torrent with the
    # most peers: hosts done, bytes still missing, the rate since this
    # Progress was made and the time left at that rate. A host the tracker
    # has not heard from yet is still checking what it holds (an everyday
    # deploy reuses most of the release): what it misses is not known, so
    # the line says how many are checking and gives no eta until they
    # announce.
    #
    # @example
    #   progress.current_line
    #   # => "murder: 3/8 hosts done, 120.0 MiB still missing, 45.2 MiB/s, eta 3 s"
    #   # => "murder: 0/16 hosts done, 12 checking what they hold, 8.2 MiB still missing, 1.1 MiB/s"
    #
    # @return [String, nil] nil when the block gave no stats or no torrent
    def current_line
      stats = @stats.call or return nil
      torrent = stats["torrents"].max_by { |t| t["peers"].size } or return nil
      peers = torrent["peers"]
      missing = peers.select { |p| p["left"].to_i.positive? }
      left = missing.sum { |p| p["left"].to_i }
      # Whoever holds everything is done, but for the seeders.
      done_hosts = (peers.size - missing.size - @seeders).clamp(0, @hosts)
      checking = [@hosts - done_hosts - missing.size, 0].max
      elapsed = Process.clock_gettime(Process::CLOCK_MONOTONIC) - @started
      rate = peers.sum { |p| p["downloaded"].to_i } / [elapsed, 1e-3].max
      line = format("murder: %d/%d hosts done", done_hosts, @hosts)
      line += format(", %d checking what they hold", checking) if checking.positive?
      line += format(", %s still missing, %s/s", Progress.human(left), Progress.human(rate))
      return line if checking.positive?

      line + format(", eta %s s", rate.positive? ? (left / rate).round : "?")
    end

    # The median of `values`.
    #
    # @api private
    # @param values [Array<Numeric>]
    # @return [Numeric] 0 when `values` is empty; the mean of the middle two
    #   (a Float) when their number is even
    def self.median(values)
      sorted = values.sort
      return 0 if sorted.empty?

      sorted.size.odd? ? sorted[sorted.size / 2] : (sorted[sorted.size / 2 - 1] + sorted[sorted.size / 2]) / 2.0
    end

    # Prints what every host received (and of it, what it reused and what
    # it downloaded, medians over the hosts), the phases of the slowest
    # host, how long making the torrent took here, and the CPU the hosts'
    # murder spent (when their summaries say: `murder peer` reports it,
    # where a deploy's time may be set by CPU). The slowest host is
    # the one whose own work (check, swarm, place) took longest: a host
    # that staged its release first waits longest for the order to place
    # it, and that wait is not its work. Prints nothing when no host
    # reported a summary.
    #
    # @param results [Hash{String => Hash, nil}] each host's summary (as
    #   {Download#run} returns it), by host; nil for a host without one
    # @param seconds [Numeric] how long the distribution took
    # @param hash_seconds [Numeric, nil] how long making the torrent took
    # @param torrent [Murder::Torrent, nil] the torrent, to name its pieces
    # @param out [IO] where the line goes
    # @return [void]
    def self.summary(results, seconds, hash_seconds: nil, torrent: nil, out: $stderr)
      done = results.compact.reject { |_, s| s.nil? }
      return if done.empty?

      slowest_host, slowest = done.max_by { |_, s| working_seconds(s) }
      bytes = slowest["bytes"].to_i
      reused = median(done.map { |_, s| s["reused_bytes"].to_i })
      downloaded = median(done.map { |_, s| s["downloaded"].to_i })
      phases = slowest["phases"] || {}
      out.puts if out.tty?
      line = format("murder: %d hosts received %s each in %.1f s; slowest %s (staged and placed in %.1f s: " \
                    "check %.2f s, swarm %.2f s, place %.2f s); per host %s reused, %s downloaded (medians)",
                    done.size, Progress.human(bytes), seconds, slowest_host, working_seconds(slowest),
                    phases["check"].to_f, phases["swarm"].to_f, phases["place"].to_f,
                    Progress.human(reused), Progress.human(downloaded))
      line += format("; torrent made in %.2f s", hash_seconds) if hash_seconds
      line += format(" (%d pieces of %s)", torrent.piece_count, Progress.human(torrent.piece_length)) if torrent
      cpu = done.filter_map { |_, s| s["cpu_seconds"] }
      line += format("; murder used %.1f CPU s on the hosts (%.2f s per host, median)", cpu.sum, median(cpu)) \
        unless cpu.empty?
      out.puts line
    end

    # A host's seconds without its wait for the order to place (phase
    # "wait"; older murder binaries do not report it).
    #
    # @api private
    # @param summary [Hash] a host's summary
    # @return [Float]
    def self.working_seconds(summary)
      summary["seconds"].to_f - (summary["phases"] || {})["wait"].to_f
    end

    # Prints one line per host, sorted by host: what it reused, what it
    # downloaded, how long each phase took there, and its CPU seconds when
    # its summary gives them. Hosts without a summary
    # are left out.
    #
    # @param results [Hash{String => Hash, nil}] as for {.summary}
    # @param out [IO] where the lines go
    # @return [void]
    def self.hosts(results, out: $stderr)
      results.compact.sort.each do |host, s|
        next if s.nil?

        phases = s["phases"] || {}
        line = format("murder:   %s: %s reused, %s downloaded, %.2f s (check %.2f, swarm %.2f, wait %.2f, place %.2f)",
                      host, Progress.human(s["reused_bytes"].to_i), Progress.human(s["downloaded"].to_i),
                      s["seconds"].to_f, phases["check"].to_f, phases["swarm"].to_f, phases["wait"].to_f,
                      phases["place"].to_f)
        line += format(", %.2f CPU s", s["cpu_seconds"]) if s["cpu_seconds"]
        out.puts line
      end
    end
  end
end
