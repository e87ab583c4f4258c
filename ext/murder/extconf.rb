# frozen_string_literal: true

# Builds the native extension with cargo. The rb_sys gem (whose
# create_rust_makefile does this) is not available here, so this writes the
# small Makefile it would: `make` runs cargo and copies the library, `make
# install` puts it where Ruby loads it (RubyGems sets sitearchdir).

require "mkmf"
require "rbconfig"
require "shellwords"

root = File.expand_path("../..", __dir__)
cargo = ENV.fetch("CARGO", find_executable("cargo") || File.expand_path("~/.cargo/bin/cargo"))
target_dir = ENV.fetch("CARGO_TARGET_DIR", File.join(root, "target"))
dlext = RbConfig::CONFIG["DLEXT"]
sitearchdir = RbConfig::CONFIG["sitearchdir"]

abort "murder: cargo not found; install Rust (https://rustup.rs) or set CARGO" unless File.executable?(cargo)

File.write("Makefile", <<~MAKE)
  # Written by ext/murder/extconf.rb
  CARGO = #{cargo.shellescape}
  CARGO_TARGET_DIR = #{target_dir.shellescape}
  ROOT = #{root.shellescape}
  DLLIB = murder.#{dlext}
  sitearchdir = #{sitearchdir.shellescape}
  target_prefix = /murder
  RUBYARCHDIR = $(sitearchdir)$(target_prefix)

  all: $(DLLIB)

  $(DLLIB): FORCE
  \t@cd $(ROOT) && CARGO_TARGET_DIR=$(CARGO_TARGET_DIR) $(CARGO) build --release --locked -p murder-ruby
  \t@cp $(CARGO_TARGET_DIR)/release/libmurder.so $(DLLIB)

  install: $(DLLIB)
  \t@mkdir -p $(DESTDIR)$(RUBYARCHDIR)
  \t@install -m 0755 $(DLLIB) $(DESTDIR)$(RUBYARCHDIR)/$(DLLIB)

  clean:
  \trm -f $(DLLIB)

  FORCE:

  .PHONY: all install clean FORCE
MAKE
