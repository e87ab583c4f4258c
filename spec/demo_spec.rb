# frozen_string_literal: true

require "open3"

# bin/demo's main act, run as bin/demo runs it (smaller, faster links): a
# first and a repeat deploy of a release tree to local hosts. The script
# itself compares every host's trees with the releases and exits non-zero
# on any difference.
RSpec.describe "bin/demo-deploy" do
  it "deploys a release and its next one, the second moving only about what changed" do
    out, status = Open3.capture2e(File.join(ROOT, "bin/demo-deploy"), "--hosts", "3", "--rate", "100M")
    expect(status).to be_success, out
    expect(out).to include("checked: every host's releases/B is release B and its releases/A still release A")
    first = out[/first deploy +[\d.]+ s, ([\d.]+) MiB per host/, 1].to_f
    repeat = out[/repeat deploy +[\d.]+ s, ([\d.]+) MiB per host/, 1].to_f
    changed = out[/one asset rebuilt: ([\d.]+) MiB/, 1].to_f
    expect(first).to be > 5 * repeat
    expect(repeat).to be_between(changed, changed + 3) # whole changed files, and a little twice
    # What each deploy cost a host in CPU, as the hosts report it.
    cpu = out.scan(/downloaded, ([\d.]+) CPU s \(medians\)/).flatten.map(&:to_f)
    expect(cpu.size).to eq(2), out
    expect(cpu).to all(be_positive)
    # The second torrent hashes only what changed (the hash cache).
    hashed, unchanged = out.scan(/(\d+) files hashed \([\d.]+ \w+\), (\d+) unchanged/).last.map(&:to_i)
    expect(hashed).to be < unchanged / 20
  end
end
