# frozen_string_literal: true

require "spec_helper"

# `gem install murder` on a machine that is not Linux (a developer's Mac):
# the extension's build must fail at once, saying why and what to do, not
# deep in a crate that calls Linux's system calls.
RSpec.describe "ext/murder/extconf.rb" do
  it "refuses to build anywhere but Linux, saying what to do" do
    out, status = Open3.capture2e("ruby", "-e", 'require "rbconfig"; RbConfig::CONFIG["host_os"] = "darwin23"; load ARGV[0]',
                                  File.join(ROOT, "ext/murder/extconf.rb"), chdir: tmpdir)
    expect(status.exitstatus).to eq(1)
    expect(out).to include("murder: builds on Linux only").and include("deploy from a Linux machine, container or VM " \
                                                                      "(host_os here: darwin23)")
    expect(File.exist?(File.join(tmpdir, "Makefile"))).to be(false)
  end
end
