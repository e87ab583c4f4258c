# frozen_string_literal: true

require "spec_helper"
require "murder/binary"
require "murder/remote"

# A deployer installs its murder binary on hosts: one built for another OS
# (a developer's Mac) or CPU must never replace a host's murder, and the
# error must say what to set (Murder::Binary.platform / .mismatch, and
# what a host whose binary is outdated says it is: Murder::Remote.outdated).
RSpec.describe "the platform a murder binary is built for" do
  let(:binary) { Murder::Binary }

  # A copy of the real binary whose ELF header names another CPU: as the
  # kernel sees it, a binary for that CPU ("Exec format error" here).
  def built_for(machine)
    path = File.join(tmpdir, "murder-#{machine}")
    FileUtils.cp(MURDER_BIN, path)
    File.open(path, "r+b") { |f| f.pwrite([machine].pack("v"), 18) }
    path
  end

  it "reads this machine's binary as Linux x86_64" do
    expect(binary.platform(MURDER_BIN).to_s).to eq("Linux x86_64")
    expect(binary.mismatch(MURDER_BIN, { "web1" => "Linux x86_64", "web2" => "" })).to be_nil
  end

  it "names the hosts a binary of another CPU or OS cannot run on, and what to set" do
    arm = built_for(183)
    expect(binary.platform(arm).to_s).to eq("Linux aarch64")
    why = binary.mismatch(arm, { "web1" => "Linux x86_64", "web2" => "Linux aarch64", "web3" => "Linux x86_64" })
    expect(why).to eq("the murder binary #{arm} is built for Linux aarch64, and web1, web3 are Linux x86_64: " \
                      "set :murder_binary (or MURDER_BINARY) to a murder built for them " \
                      "(`cargo build --release -p murder-cli` on such a machine)")
    mac = File.join(tmpdir, "murder-mac")
    File.binwrite(mac, "\xCF\xFA\xED\xFE".b + [0x0100000c].pack("V") + ("\0" * 56))
    expect(binary.platform(mac).to_s).to eq("Darwin arm64")
    expect(binary.mismatch(mac, { "web1" => "Linux aarch64" })).to include("built for Darwin arm64, and web1 is Linux aarch64")
  end

  it "checks nothing for a binary of a format or CPU it does not know" do
    script = File.join(tmpdir, "murder-wrapper")
    File.write(script, "#!/bin/sh\nexec /opt/murder \"$@\"\n")
    expect(binary.platform(script)).to be_nil
    expect(binary.mismatch(script, { "web1" => "Linux x86_64" })).to be_nil
    expect(binary.platform(built_for(0x9999))).to be_nil
  end

  it "reads what a host whose murder is outdated says it is" do
    out, status = Open3.capture2e("sh", "-c", Murder::Remote::SCRIPT, "murder-peer", "/nonexistent/murder",
                                  "0" * 64, tmpdir, ".x.part", "/nonexistent/x")
    expect(status.exitstatus).to eq(Murder::Remote::OUTDATED)
    expect(Murder::Remote.outdated(out)).to eq(`uname -sm`.strip)
    expect(Murder::Remote.outdated("murder: some other failure")).to be_nil
  end
end
