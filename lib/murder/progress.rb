# frozen_string_literal: true

module Murder
  # The deployer's view of a distribution: one live line a second from
  # the tracker's view of the swarm while hosts download, and a summary
  # from what every host reported.
  class Progress
    # Bytes in binary units: "4.5 MiB".
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
             Progress.human(all_left), Progress.human(rate), eta)
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
                    done.size, Progress.human(bytes), seconds, slowest_host, slowest["seconds"].to_f,
                    phases["check"].to_f, phases["swarm"].to_f, phases["place"].to_f,
                    Progress.human(reused), Progress.human(downloaded))
      line += format("; torrent made in %.2f s", hash_seconds) if hash_seconds
      line += format(" (%d pieces of %s)", torrent.piece_count, Progress.human(torrent.piece_length)) if torrent
      out.puts line
    end

    # One line per host: what it reused, what it downloaded, how long each
    # phase took there.
    def self.hosts(results, out: $stderr)
      results.compact.sort.each do |host, s|
        next if s.nil?

        phases = s["phases"] || {}
        out.puts format("murder:   %s: %s reused, %s downloaded, %.2f s (check %.2f, swarm %.2f, place %.2f)",
                        host, Progress.human(s["reused_bytes"].to_i), Progress.human(s["downloaded"].to_i),
                        s["seconds"].to_f, phases["check"].to_f, phases["swarm"].to_f, phases["place"].to_f)
      end
    end
  end
end
