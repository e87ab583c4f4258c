# frozen_string_literal: true

require_relative "lib/murder/version"

Gem::Specification.new do |spec|
  spec.name = "murder"
  spec.version = Murder::VERSION
  spec.summary = "BitTorrent deploys for fleets of servers, with a Rust engine"
  spec.description = <<~DESC
    Twitter's Murder rebuilt: Capistrano tasks that ship each release through
    a BitTorrent swarm of your own servers. Torrent creation, the tracker and
    the peer engine are Rust, built as a native extension and as the
    standalone `murder` command that every host runs.
  DESC
  spec.license = "Apache-2.0"
  spec.authors = ["murder developers"]
  spec.homepage = "https://example.invalid/murder"
  spec.required_ruby_version = ">= 3.1"

  # What building the extension needs (the Cargo workspace and its sources)
  # and what Ruby loads; tests and benchmarks stay in the repository.
  spec.files = Dir[
    "README.md", "Cargo.toml", "Cargo.lock", "murder.gemspec",
    "lib/**/*.rb", "recipes/**/*", "ext/murder/extconf.rb",
    "ext/*/Cargo.toml", "ext/*/src/**/*.rs", "exe/murder"
  ].select { |f| File.file?(f) }
  spec.require_paths = ["lib"]
  # `murder` on PATH: the native command the extension build makes.
  spec.bindir = "exe"
  spec.executables = ["murder"]
  spec.extensions = ["ext/murder/extconf.rb"]
end
