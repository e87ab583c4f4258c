# frozen_string_literal: true

# Metrics for Prometheus, read by the Prometheus client library's own
# OpenMetrics parser (Debian's python3-prometheus-client).
RSpec.describe "metrics" do
  PARSE = <<~PY
    import json, sys
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    out = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + ("{" + labels + "}" if labels else "")] = s.value
    print(json.dumps(out))
  PY

  def parse(text)
    out, status = Open3.capture2e(SYSTEM_PYTHON, "-c", PARSE, stdin_data: text)
    raise "the parser refused the metrics: #{out}\n#{text}" unless status.success?

    JSON.parse(out)
  end

  def metrics(port) = http_get(port, "/metrics").body

  it "the tracker's /metrics and a seed's and a download's --metrics parse, with the right values" do
    tracker = Murder::Tracker.new(port: 0, bind: "127.0.0.1", interval: 1).start
    data = sample_file("release.tgz", bytes: 2_000_000)
    torrent = File.join(tmpdir, "r.torrent")
    murder("make-torrent", data, "--tracker", "127.0.0.1:#{tracker.port}", "-o", torrent, "-q")
    hash = tracker.allow(torrent)
    seed_port = free_port
    spawn_logged(MURDER_BIN, "seed", torrent, data, "--ip", "127.0.0.1", "--bind", "127.0.0.1",
                 "--metrics", "127.0.0.1:#{seed_port}", log: File.join(tmpdir, "seed.log"))
    eventually { tracker.stats["torrents"].first["seeds"] == 1 }
    peer_port = free_port
    pid = spawn_logged(MURDER_BIN, "peer", torrent, File.join(tmpdir, "out/release.tgz"), "--ip", "127.0.0.1",
                       "--bind", "127.0.0.1", "--linger", "30", "--metrics", "127.0.0.1:#{peer_port}",
                       "--pidfile", File.join(tmpdir, "peer.pid"),
                       log: File.join(tmpdir, "peer.log"))
    Process.wait(pid) # the foreground exits once complete; the lingering child serves on
    @spawned.delete(pid)
    peer = eventually { parse(metrics(peer_port)) rescue nil }
    expect(peer).to include("murder_peer_downloaded_bytes_total{role=download}" => be >= 2_000_000,
                            "murder_peer_verified_bytes{role=download}" => 2_000_000,
                            "murder_peer_size_bytes{role=download}" => 2_000_000,
                            "murder_peer_complete{role=download}" => 1)
    seed = parse(metrics(seed_port))
    expect(seed["murder_peer_uploaded_bytes_total{role=seed}"]).to be >= 2_000_000
    eventually { tracker.stats["torrents"].first["seeds"] == 2 }
    ours = parse(metrics(tracker.port))
    labels = "{info_hash=#{hash},name=release.tgz}"
    expect(ours).to include("murder_tracker_seeds#{labels}" => 2, "murder_tracker_peers#{labels}" => 2,
                            "murder_tracker_left_bytes#{labels}" => 0, "murder_tracker_torrents" => 1)
    expect(ours["murder_tracker_announces_total"]).to be >= 2
    expect(ours["murder_tracker_completions_total#{labels}"]).to eq(1)
  ensure
    # The lingering download, by its pidfile (it left the process group).
    system(MURDER_BIN, "stop", "--pidfile", File.join(tmpdir, "peer.pid"), out: File::NULL)
    tracker&.stop
  end

  # The metrics port was bound only after the data was checked, and its
  # failure reached neither the JSON progress nor the tracker (no stopped).
  it "fails a download whose --metrics port is taken before it checks anything, saying so in its JSON" do
    data = sample_file("release.tgz", bytes: 500_000)
    torrent = File.join(tmpdir, "r.torrent")
    murder("make-torrent", data, "--tracker", "127.0.0.1:9", "-o", torrent, "-q")
    blocker = TCPServer.new("127.0.0.1", 0)
    dest = File.join(tmpdir, "host/release.tgz")
    out, _err, status = Open3.capture3(MURDER_BIN, "peer", torrent, dest, "--linger", "0", "--progress", "json",
                                       "--metrics", "127.0.0.1:#{blocker.addr[1]}", chdir: tmpdir)
    expect(status.exitstatus).to eq(1)
    failed = out.lines.map { |line| JSON.parse(line) }.find { |e| e["event"] == "failed" }
    expect(failed&.fetch("error")).to match(/metrics 127\.0\.0\.1:\d+: Address already in use/)
    expect(File.exist?(staging(dest))).to be(false)
  ensure
    blocker&.close
  end
end
