# frozen_string_literal: true

require "spec_helper"
require "sshkit"
require "capistrano/murder/support"

# How a peer unpacks a release (Capistrano::Murder::Support.extract_release,
# used by murder:peer and the deploy strategy), run through SSHKit's local
# backend with the real tar: a hostile archive writes nothing outside the
# destination and leaves no half release behind.
RSpec.describe "extracting a release" do
  let(:base) { File.realpath(tmpdir) }
  let(:dest) { File.join(base, "deploy/releases/20261126") }

  # An archive made by Python's tarfile, which writes any member we ask for.
  def archive(path, members)
    script = <<~PY
      import io, json, sys, tarfile
      with tarfile.open(sys.argv[1], "w:gz") as t:
          for m in json.loads(sys.argv[2]):
              info = tarfile.TarInfo(m["name"])
              kind = m.get("kind", "file")
              if kind == "file":
                  data = m.get("data", "x").encode()
                  info.size = len(data)
                  t.addfile(info, io.BytesIO(data))
              else:
                  info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                  info.linkname = m["target"]
                  t.addfile(info)
    PY
    run!(SYSTEM_PYTHON, "-c", script, path, JSON.generate(members))
    path
  end

  def extract(payload, into: false, to: dest, emptying: false, backend_class: SSHKit::Backend::Local)
    backend = backend_class.new do
      Capistrano::Murder::Support.extract_release(self, payload, to, into: into, emptying: emptying)
    end
    backend.run
  end

  # A deployer interrupted (Ctrl-C) once tar is done, before the release
  # is moved into place.
  class InterruptedAfterTar < SSHKit::Backend::Local
    def execute(*args)
      raise Interrupt if @tar_done

      super.tap { @tar_done = args.first == :tar }
    end
  end

  before do
    FileUtils.mkdir_p(File.join(base, "outside"))
    File.write(File.join(base, "victim"), "untouched")
    SSHKit.config.output = SSHKit::Formatter::Dot.new(StringIO.new)
  end

  it "unpacks a good archive into place" do
    good = archive(File.join(base, "good.tgz"), [{ name: "app/config.ru", data: "run App" },
                                                  { name: "app/shared", kind: "symlink", target: "/srv/shared" }])
    extract(good)
    expect(File.read(File.join(dest, "app/config.ru"))).to eq("run App")
    expect(File.readlink(File.join(dest, "app/shared"))).to eq("/srv/shared") # links themselves are fine
    expect(Dir.children(File.dirname(dest))).to eq([File.basename(dest)])
  end

  # Capistrano's rollback takes the releases `ls -xt` lists: a staging
  # directory left by an interrupted deploy (RELEASE.murder-extract) was
  # one of them, and rollback could make it current.
  it "stages under a dot name, so an interrupted extraction leaves no release to ls" do
    good = archive(File.join(base, "good.tgz"), [{ name: "app/config.ru", data: "run App" }])
    expect { extract(good, backend_class: InterruptedAfterTar) }.to raise_error(Interrupt)
    left = Dir.children(File.dirname(dest))
    expect(left.size).to eq(1)
    expect(left.first).to start_with(".")
  end

  # Murder's no_tag_directory: 2010 extracted into destination_path itself;
  # replacing it made a symlinked destination a plain directory (and needed
  # its parent writable).
  it "extracts into the destination itself with into:, keeping a symlinked destination a symlink" do
    real = File.join(base, "real")
    FileUtils.mkdir_p(real)
    link = File.join(base, "current")
    File.symlink(real, link)
    good = archive(File.join(base, "good.tgz"), [{ name: "app/config.ru", data: "run App" }, { name: ".env", data: "A=1" }])
    extract(good, into: true, to: link)
    expect(File.symlink?(link)).to be(true)
    expect(File.read(File.join(real, "app/config.ru"))).to eq("run App")
    expect(Dir.children(real).sort).to eq(%w[.env app])
  end

  # Without `into` an existing destination (destination_path/TAG: empty,
  # or emptied by unsafe_please_delete) was replaced: a symlink there
  # became a plain directory and its target stayed empty.
  it "extracts into a destination that is there already, keeping a symlink one" do
    real = File.join(base, "real")
    FileUtils.mkdir_p(real)
    FileUtils.mkdir_p(File.dirname(dest))
    File.symlink(real, dest)
    good = archive(File.join(base, "good.tgz"), [{ name: "app/config.ru", data: "run App" }])
    extract(good)
    expect(File.symlink?(dest)).to be(true)
    expect(File.read(File.join(real, "app/config.ru"))).to eq("run App")
    expect(Dir.children(real)).to eq(%w[app])
  end

  it "extracts into the destination an archive that holds any name at its top, even the staging's" do
    odd = archive(File.join(base, "odd.tgz"), [{ name: ".murder-extract/x", data: "x" }, { name: "y", data: "y" }])
    extract(odd, into: true)
    expect(Dir.children(dest).sort).to eq(%w[.murder-extract y])
    expect(File.read(File.join(dest, ".murder-extract/x"))).to eq("x")
  end

  # unsafe_please_delete emptied the destination before the download (and
  # then before tar): a host whose archive failed to extract was left with
  # nothing there.
  it "empties a destination with emptying: only once the archive is extracted" do
    [true, false].each do |into|
      FileUtils.mkdir_p(dest)
      File.write(File.join(dest, "old.txt"), "old")
      bad = File.join(base, "bad.tgz")
      File.write(bad, "not an archive")
      expect { extract(bad, into: into, emptying: true) }.to raise_error(SSHKit::Command::Failed, /tar/)
      expect(Dir.children(dest)).to eq(["old.txt"]), "into: #{into}"
      good = archive(File.join(base, "good.tgz"), [{ name: "app/config.ru", data: "run App" }])
      extract(good, into: into, emptying: true)
      expect(Dir.children(dest)).to eq(["app"]), "into: #{into}"
      FileUtils.rm_rf(dest)
    end
  end

  it "refuses members that lead out of the destination and leaves nothing half done" do
    evil = archive(File.join(base, "evil.tgz"), [
                     { name: "ok.txt", data: "fine" },
                     { name: "../escape.txt", data: "up" },
                     { name: "a/../../../climb.txt", data: "climb" },
                     { name: File.join(base, "absolute.txt"), data: "absolute" },
                     { name: "link", kind: "symlink", target: File.join(base, "outside") },
                     { name: "link/through.txt", data: "through a link" },
                     { name: "hard", kind: "hardlink", target: File.join(base, "victim") }
                   ])
    expect { extract(evil) }.to raise_error(SSHKit::Command::Failed, /tar/)

    written = Dir.glob("**/*", File::FNM_DOTMATCH, base: base).reject { |p| p.end_with?("/.", "..") || p == "." }
    expect(written.sort).to eq(%w[evil.tgz outside victim deploy deploy/releases].sort)
    expect(File.read(File.join(base, "victim"))).to eq("untouched")
    expect(File.stat(File.join(base, "victim")).nlink).to eq(1)
  end
end
