# frozen_string_literal: true

require "spec_helper"
require "socket"
require "capistrano/murder/binary_distribution"

# The script a host runs to fetch the murder binary from a holder serving
# it (`murder serve-file`), run here for real against the binary.
RSpec.describe "Capistrano::Murder::BinaryDistribution::FETCH" do
  let(:fetch) { Capistrano::Murder::BinaryDistribution::FETCH }
  let(:sha) { Murder::Remote.sha256(MURDER_BIN) }

  # Serves the binary to one client on +port+, as a holder does.
  def serve(port)
    pid = Process.spawn(MURDER_BIN, "serve-file", MURDER_BIN, "--port", port.to_s, "--clients", "1",
                        "--timeout", "20", out: File::NULL, err: File.join(tmpdir, "serve.err"))
    yield
  ensure
    Process.kill("TERM", pid) if pid && process_alive?(pid)
    Process.wait(pid) if pid
  end

  def ipv6_loopback?
    Addrinfo.tcp("::1", 0).bind.close
    true
  rescue SystemCallError
    false
  end

  def run_fetch(address, port, dir)
    system("sh", "-c", fetch, "fetch", address, port.to_s, dir, sha, out: File::NULL, err: File.join(tmpdir, "fetch.err"))
  end

  it "installs the binary from a holder addressed by IPv4" do
    port = free_port
    dir = File.join(tmpdir, "v4")
    serve(port) { expect(run_fetch("127.0.0.1", port, dir)).to be(true), File.read(File.join(tmpdir, "fetch.err")) }
    expect(Murder::Remote.sha256(File.join(dir, "murder"))).to eq(sha)
    expect(File.read(File.join(dir, "murder.sha256")).strip).to eq(sha)
  end

  # Rule: a holder addressed by IPv6 is reached (a bracketed URL, and
  # serve-file listening on every address).
  it "installs the binary from a holder addressed by IPv6" do
    raise "bin/test needs an IPv6 loopback (::1) for this rule" unless ipv6_loopback?
    port = free_port
    dir = File.join(tmpdir, "v6")
    serve(port) { expect(run_fetch("::1", port, dir)).to be(true), File.read(File.join(tmpdir, "fetch.err")) }
    expect(Murder::Remote.sha256(File.join(dir, "murder"))).to eq(sha)
    dir = File.join(tmpdir, "v6-bracketed") # as a host name may be written
    serve(port) { expect(run_fetch("[::1]", port, dir)).to be(true), File.read(File.join(tmpdir, "fetch.err")) }
    expect(Murder::Remote.sha256(File.join(dir, "murder"))).to eq(sha)
  end

  # A holder that takes the connection and never answers (or a port whose
  # packets are dropped): each try waited 30 s and there were 50 (wget
  # retried each 20 times more), while the holder gave up after 30 s.
  # The fetch has one deadline ($5 seconds here, 35 by default).
  it "gives up at its deadline on a holder that never answers" do
    server = TCPServer.new("127.0.0.1", 0)
    held = []
    acceptor = Thread.new { loop { held << server.accept } }
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    pid = Process.spawn("sh", "-c", fetch, "fetch", "127.0.0.1", server.addr[1].to_s, File.join(tmpdir, "hung"), sha,
                        "2", out: File::NULL, err: File::NULL, pgroup: true)
    waited = eventually(timeout: 20) { Process.wait2(pid, Process::WNOHANG) }
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
    expect(waited.last).not_to be_success
    expect(took).to be < 8
    expect(File.exist?(File.join(tmpdir, "hung/murder"))).to be(false)
  ensure
    if pid && waited.nil?
      Process.kill("KILL", -pid) # sh and its curl
      Process.wait(pid)
    end
    acceptor&.kill
    held&.each(&:close)
    server&.close
  end

  # serve-file buffered a request head of any length for the whole 60 s a
  # client gets: one client could make it hold unbounded memory.
  it "cuts off a client whose request head runs past 16 KiB" do
    port = free_port
    serve(port) do
      socket = eventually { TCPSocket.new("127.0.0.1", port) rescue nil }
      socket.write("GET /murder HTTP/1.0\r\nX-Junk: #{'a' * (64 << 10)}")
      readable = IO.select([socket], nil, nil, 5)
      expect(readable).not_to be_nil, "serve-file still reading the head after 5 s"
      answer = begin
        socket.read
      rescue Errno::ECONNRESET
        ""
      end
      expect(answer).to eq("")
    ensure
      socket&.close
    end
  end
end
