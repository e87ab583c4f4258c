# frozen_string_literal: true

# Builds the native extension and the `murder` command with cargo. The
# rb_sys gem (whose create_rust_makefile does this) is not available here,
# so this writes the small Makefile it would: `make` runs cargo and copies
# the library and the command, `make install` puts them where Ruby loads the
# extension (RubyGems sets sitearchdir): murder/murder.so and
# murder/bin/murder, which Murder.binary finds.
#
# The command is what every host runs, so it is built for hosts: the `dist`
# profile (stripped, LTO), and, when cargo-zigbuild and zig (the `ziglang`
# package from PyPI) are at hand, against glibc 2.17, so that it runs on
# hosts older than this machine. Without them it needs this machine's glibc
# or newer. MURDER_GLIBC=native skips zig; MURDER_SKIP_CLI=1 builds only the
# extension (`rake compile` in a checkout, whose tests use target/release).

require "mkmf"
require "rbconfig"
require "shellwords"

# The engine uses Linux's system calls (fallocate, sync_file_range,
# renameat2, accept4), and the extension is loaded as an ELF .so: say so
# before cargo fails deep in a crate.
unless RbConfig::CONFIG["host_os"].include?("linux")
  abort "murder: builds on Linux only (the deploying machine runs the same engine as the servers); " \
        "deploy from a Linux machine, container or VM (host_os here: #{RbConfig::CONFIG['host_os']})"
end

root = File.expand_path("../..", __dir__)
cargo = ENV.fetch("CARGO", find_executable("cargo") || File.expand_path("~/.cargo/bin/cargo"))
target_dir = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
dlext = RbConfig::CONFIG["DLEXT"]
sitearchdir = RbConfig::CONFIG["sitearchdir"]
arch = RbConfig::CONFIG["host_cpu"] == "aarch64" ? "aarch64" : "x86_64"

abort "murder: cargo not found; install Rust (https://rustup.rs) or set CARGO" unless File.executable?(cargo)

zigbuild = File.join(File.dirname(cargo), "cargo-zigbuild")
zig = system("python3 -c 'import ziglang' 2>/dev/null") || find_executable("zig")
if ENV["MURDER_GLIBC"] != "native" && File.executable?(zigbuild) && zig
  triple = "#{arch}-unknown-linux-gnu"
  cli_build = "#{cargo} zigbuild --locked --profile dist -p murder-cli --target #{triple}.2.17"
  cli_path = File.join(target_dir, triple, "dist", "murder")
  message "murder: building the murder command against glibc 2.17 (cargo zigbuild)\n"
else
  cli_build = "#{cargo} build --locked --profile dist -p murder-cli"
  cli_path = File.join(target_dir, "dist", "murder")
  message "murder: building the murder command against this machine's glibc " \
          "(install cargo-zigbuild and `pip install ziglang` for a glibc 2.17 baseline)\n"
end

File.write("Makefile", <<~MAKE)
  # Written by ext/murder/extconf.rb
  CARGO = #{cargo.shellescape}
  CARGO_TARGET_DIR = #{target_dir.shellescape}
  ROOT = #{root.shellescape}
  DLLIB = murder.#{dlext}
  BIN = murder-bin
  sitearchdir = #{sitearchdir.shellescape}
  target_prefix = /murder
  RUBYARCHDIR = $(sitearchdir)$(target_prefix)

  all: $(DLLIB) #{ENV["MURDER_SKIP_CLI"] == "1" ? "" : "$(BIN)"}

  $(DLLIB): FORCE
  \t@cd $(ROOT) && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) $(CARGO) build --release --locked -p murder-ruby
  \t@cp $(CARGO_TARGET_DIR)/release/libmurder.so $(DLLIB)

  $(BIN): FORCE
  \t@cd $(ROOT) && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) #{cli_build}
  \t@cp #{cli_path.shellescape} $(BIN)

  install: all
  \t@mkdir -p $(DESTDIR)$(RUBYARCHDIR)/bin
  \t@install -m 0755 $(DLLIB) $(DESTDIR)$(RUBYARCHDIR)/$(DLLIB)
  \t@if [ -f $(BIN) ]; then install -m 0755 $(BIN) $(DESTDIR)$(RUBYARCHDIR)/bin/murder; fi

  clean:
  \trm -f $(DLLIB) $(BIN)

  FORCE:

  .PHONY: all install clean FORCE
MAKE
