# frozen_string_literal: true

# The tracker's page, rendered by a real browser (headless Chromium) while a
# swarm runs: one row per host, done hosts marked, the slow host's rate shown.
RSpec.describe "the tracker's dashboard" do
  # One host's row as the page builds it: name, bar, percent, rate.
  ROW = %r{<div class="(host(?: done)?)"[^>]*><div class="name">([^<]*)</div><div class="bar"[^>]*><i[^>]*></i></div><div class="num">([^<]*)</div><div class="num">([^<]*)</div></div>}
  CHROMIUM = ENV.fetch("PATH").split(File::PATH_SEPARATOR).map { |d| File.join(d, "chromium") }
                .find { |c| File.executable?(c) }

  def chromium(*args, url)
    profile = File.join(tmpdir, "chromium")
    out, status = Open3.capture2e(
      CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--user-data-dir=#{profile}", "--window-size=1100,600", "--virtual-time-budget=2500", *args, url
    )
    raise "chromium failed: #{out}" unless status.success?

    out
  end

  it "shows every host, which are done, and the rate of the one still downloading" do
    raise "chromium is not installed (bin/setup installs it)" unless CHROMIUM

    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1).start
    data = sample_file("release.tgz", bytes: 6_000_000)
    torrent = File.join(tmpdir, "r.torrent")
    murder("make-torrent", data, "--tracker", "127.0.0.1:#{tracker.port}", "-o", torrent, "-q")
    tracker.allow(torrent)
    spawn_logged(MURDER_BIN, "seed", torrent, data, "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                 log: File.join(tmpdir, "seed.log"))
    peer = lambda do |name, *limit|
      spawn_logged(MURDER_BIN, "peer", torrent, File.join(tmpdir, name, "release.tgz"), "--ip", "127.0.0.1",
                   "--bind", "127.0.0.1", "--linger", "0", *limit, log: File.join(tmpdir, "#{name}.log"))
    end
    2.times { |i| Process.wait(peer.call("fast#{i}")) }
    peer.call("slow", "--download-limit", "512K")
    # Two announces of the slow host, so the tracker has its rate.
    eventually(timeout: 10) do
      slow = tracker.stats["torrents"].first["peers"].find { |p| p["left"].positive? }
      slow && slow["rate"].positive?
    end

    dom = chromium("--dump-dom", "http://127.0.0.1:#{tracker.port}/")
    rows = dom.scan(ROW).map { |klass, name, pct, rate| { done: klass.include?("done"), name:, pct:, rate: } }
    # The seed runs on; the fast downloads left (--linger 0) and are gone.
    expect(rows.size).to eq(2), dom
    expect(rows.count { |r| r[:done] }).to eq(1), dom
    slow = rows.find { |r| !r[:done] }
    expect(slow[:pct]).to match(/\A\d+\.\d%\z/)
    expect(slow[:rate]).to match(%r{\A[\d.]+ (B|KiB|MiB)/s\z})
    expect(slow[:rate]).not_to eq("0 B/s")
    expect(dom).to include("<b>1 / 2</b><span>hosts done</span>")
    expect(dom.scan(/<svg class="chart"/).size).to eq(1)

    shot = File.join(tmpdir, "dashboard.png")
    chromium("--screenshot=#{shot}", "http://127.0.0.1:#{tracker.port}/")
    expect(File.binread(shot, 8)).to eq("\x89PNG\r\n\x1a\n".b)
    expect(File.size(shot)).to be > 10_000 # a blank page is a few hundred bytes
  ensure
    tracker&.stop
  end
end
