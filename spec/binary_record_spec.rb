# frozen_string_literal: true

require "spec_helper"
require "capistrano/murder/support"

# The deployer's record of which hosts hold which murder binary
# (Capistrano::Murder::Support.binary_known? / remember_binary): it lets a
# deploy skip the check round of murder:distribute_files, so it must never
# claim a host it has not seen with exactly this binary.
RSpec.describe "the record of hosts holding the murder binary" do
  let(:s) { Capistrano::Murder::Support }
  let(:record) { File.join(tmpdir, "cache/binary-hosts.json") }
  let(:sha) { "a" * 64 }

  it "knows nothing before a deploy recorded it" do
    expect(s.binary_known?(record, sha, %w[h1])).to be(false)
  end

  it "knows the hosts of the last deploy with this binary, and only those" do
    s.remember_binary(record, sha, %w[h2 h1 h1])
    expect(s.binary_known?(record, sha, %w[h1 h2])).to be(true)
    expect(s.binary_known?(record, sha, %w[h1])).to be(true)
    expect(s.binary_known?(record, sha, %w[h1 h3])).to be(false)
    expect(s.binary_known?(record, "b" * 64, %w[h1])).to be(false)
    expect(Dir.children(File.dirname(record))).to eq(["binary-hosts.json"])
  end

  it "treats a damaged record as none" do
    FileUtils.mkdir_p(File.dirname(record))
    File.write(record, "{not json")
    expect(s.binary_known?(record, sha, %w[h1])).to be(false)
    File.write(record, "[]")
    expect(s.binary_known?(record, sha, %w[h1])).to be(false)
  end
end
