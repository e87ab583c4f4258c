# frozen_string_literal: true

require "stringio"
require "murder/progress"

RSpec.describe Murder::Progress do
  # Two hosts as `murder peer --wait-to-place` reports them: "a" staged
  # first and then waited for "b", so its total is the larger.
  let(:results) do
    {
      "a" => { "bytes" => 1_048_576, "reused_bytes" => 0, "downloaded" => 1_048_576, "seconds" => 2.6,
               "phases" => { "check" => 0.2, "swarm" => 0.5, "place" => 0.1, "wait" => 1.7 } },
      "b" => { "bytes" => 1_048_576, "reused_bytes" => 0, "downloaded" => 1_048_576, "seconds" => 2.5,
               "phases" => { "check" => 1.5, "swarm" => 0.7, "place" => 0.2, "wait" => 0.0 } },
      "c" => nil
    }
  end

  it "names as slowest the host whose own work took longest, not the one that waited longest to place" do
    out = StringIO.new
    described_class.summary(results, 2.8, out: out)
    expect(out.string).to include("slowest b (staged and placed in 2.5 s: check 1.50 s, swarm 0.70 s, place 0.20 s)")
  end

  it "shows each host's wait for the order to place as its own phase" do
    out = StringIO.new
    described_class.hosts(results, out: out)
    expect(out.string.lines).to eq(
      ["murder:   a: 0 B reused, 1.0 MiB downloaded, 2.60 s (check 0.20, swarm 0.50, wait 1.70, place 0.10)\n",
       "murder:   b: 0 B reused, 1.0 MiB downloaded, 2.50 s (check 1.50, swarm 0.70, wait 0.00, place 0.20)\n"]
    )
  end

  it "says what CPU each host's murder spent, and in all, when the hosts report it" do
    with_cpu = results.merge("a" => results["a"].merge("cpu_seconds" => 0.25),
                             "b" => results["b"].merge("cpu_seconds" => 0.75))
    hosts = StringIO.new
    described_class.hosts(with_cpu, out: hosts)
    expect(hosts.string.lines.map { |l| l[/, [\d.]+ CPU s$/] }).to eq([", 0.25 CPU s", ", 0.75 CPU s"])
    summary = StringIO.new
    described_class.summary(with_cpu, 2.8, out: summary)
    expect(summary.string).to include("; murder used 1.0 CPU s on the hosts (0.50 s per host, median)")
    # Without it (a session inside Ruby, an older binary): nothing is made up.
    plain = StringIO.new
    described_class.summary(results, 2.8, out: plain)
    expect(plain.string).not_to include("CPU")
  end

  it "reads a summary without a wait (an older murder binary) as one that did not wait" do
    legacy = { "h" => { "bytes" => 10, "seconds" => 1.0, "phases" => { "check" => 0.5 } } }
    out = StringIO.new
    described_class.summary(legacy, 1.2, out: out)
    expect(out.string).to include("slowest h (staged and placed in 1.0 s: check 0.50 s")
  end
end

RSpec.describe Murder::Progress, "#current_line" do
  # The tracker's stats as an everyday deploy's first second shows them:
  # one host announced after its check (most of the release reused), the
  # others still check what they hold.
  def line(peers, hosts: 16)
    stats = { "torrents" => [{ "total_length" => 108_044_279, "data_length" => 69_520_000, "peers" => peers }] }
    described_class.new(hosts, out: StringIO.new) { stats }.current_line
  end

  it "counts hosts still checking what they hold as checking, not as missing the whole release" do
    current = line([{ "left" => 5_242_880, "downloaded" => 1_048_576 }])
    expect(current).to start_with("murder: 0/16 hosts done, 15 checking what they hold, 5.0 MiB still missing, ")
    expect(current).not_to include("eta")
  end

  it "counts a host that reused the whole release as done, not as checking (a rename-only release)" do
    seed = { "left" => 0, "downloaded" => 0 }
    reused = Array.new(3) { { "left" => 0, "downloaded" => 0 } }
    expect(line([seed, *reused], hosts: 3)).to start_with("murder: 3/3 hosts done, 0 B still missing, ")
    expect(line([seed, *reused.first(2)], hosts: 3)).to start_with("murder: 2/3 hosts done, 1 checking what they hold")
  end

  it "gives an eta once every host announced" do
    peers = Array.new(4) { { "left" => 1_048_576, "downloaded" => 4_194_304 } }
    expect(line(peers, hosts: 4)).to match(%r{\Amurder: 0/4 hosts done, 4\.0 MiB still missing, [\d.]+ [KMG]iB/s, eta \d+ s\z})
  end
end
