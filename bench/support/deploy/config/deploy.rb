# frozen_string_literal: true

farm = ENV.fetch("FARM_DIR")
set :application, "benchapp"
set :deploy_to, ENV.fetch("BENCH_DEPLOY_TO", "/srv/benchapp")
set :ssh_options, {
  user: "root", keys: ["#{farm}/id_ed25519"], keys_only: true, auth_methods: ["publickey"],
  user_known_hosts_file: "#{farm}/known_hosts", verify_host_key: :always, timeout: 10
}
set :murder_binary, ENV.fetch("MURDER_BINARY")
set :murder_source_dir, ENV.fetch("BENCH_SOURCE")
set :murder_seed_locally, true
set :murder_linger, 5
set :keep_releases, 2
set :log_level, :warn
set :murder_compression, ENV["MURDER_COMPRESSION"].to_sym if ENV["MURDER_COMPRESSION"]
set :murder_release, ENV["MURDER_RELEASE"].to_sym if ENV["MURDER_RELEASE"]
set :murder_cache_path, ENV["MURDER_CACHE_PATH"] if ENV["MURDER_CACHE_PATH"]
set :murder_binary_fanout, Integer(ENV["MURDER_BINARY_FANOUT"]) if ENV["MURDER_BINARY_FANOUT"]
set :murder_piece_length, Integer(ENV["MURDER_PIECE_LENGTH"]) unless ENV.fetch("MURDER_PIECE_LENGTH", "").empty?
set :murder_relay, ENV["MURDER_RELAY"] == "1"
