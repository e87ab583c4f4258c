# frozen_string_literal: true

require "spec_helper"
require "capistrano/all"
require "capistrano/murder/helpers"

# The Capistrano tasks' view of a configuration: which servers a run
# deploys to.
RSpec.describe Capistrano::Murder::Helpers do
  let(:dsl) do
    Class.new do
      include Capistrano::DSL
      include Capistrano::Murder::Helpers
    end.new
  end

  before { Capistrano::Configuration.reset! }
  after { Capistrano::Configuration.reset! }

  # A deploy's barrier waits for a vote from every peer; a server that
  # `on` skips (HOSTS=, ROLES=, :filter) never votes, and cap hung.
  it "counts as peers only the servers this run deploys to, as `on` does" do
    servers = lambda do
      dsl.server "app1", roles: %w[app web]
      dsl.server "app2", roles: %w[app web]
      dsl.server "app3", roles: %w[web]
      dsl.server "db1", roles: %w[db], no_release: true
    end
    servers.call
    expect(dsl.murder_peers.map(&:hostname)).to eq(%w[app1 app2 app3])
    { { hosts: %w[app1 app3] } => %w[app1 app3], { roles: %w[app] } => %w[app1 app2] }.each do |filter, peers|
      Capistrano::Configuration.reset!
      servers.call
      dsl.set :filter, filter
      expect(dsl.murder_peers.map(&:hostname)).to eq(peers)
      expect(dsl.murder_seeder.hostname).to eq(peers.first)
    end
  end

  # `on` skips a tracker or seeder the filter leaves out: no tracker
  # started, and hosts failed later on a torrent that was never made. The
  # tasks that start them check first.
  it "names a tracker or seeder that HOSTS= leaves out instead of going on without it" do
    configure = lambda do |hosts|
      Capistrano::Configuration.reset! # it keeps the filter it built first
      dsl.server "app1", roles: %w[app tracker seeder]
      dsl.server "app2", roles: %w[app]
      dsl.set :filter, { hosts: hosts }
    end
    configure.call(%w[app2])
    expect(dsl.murder_peers.map(&:hostname)).to eq(%w[app2])
    expect { dsl.within_filter!(dsl.murder_trackers, "tracker") }
      .to raise_error(Capistrano::Murder::Error, /the tracker app1 is left out/)
    expect { dsl.within_filter!([dsl.murder_seeder], "seeder") }
      .to raise_error(Capistrano::Murder::Error, /the seeder app1 is left out/)
    configure.call(%w[app1 app2])
    expect(dsl.within_filter!(dsl.murder_trackers, "tracker").map(&:hostname)).to eq(%w[app1])
    expect(dsl.within_filter!([dsl.murder_seeder], "seeder").map(&:hostname)).to eq(%w[app1])
  end

  # path_is_file named its payload temp_path/TAG, against 2010's and the
  # README's TAG.tgz; and a files_path that is the payload itself was
  # copied onto itself, then removed by clean_temp_files.
  it "names a path_is_file payload TAG.tgz and refuses a files_path that is the payload" do
    env = { "tag" => "app.jar", "files_path" => "/srv/app.jar", "path_is_file" => "1", "temp_path" => "/tmp" }
    with_env(env) do
      expect(dsl.murder_payload).to eq("/tmp/app.jar.tgz")
      expect(dsl.murder_file_to_copy).to eq("/srv/app.jar")
    end
    # peer, start_seeding and clean_temp_files need no files_path.
    with_env(env.merge("files_path" => nil)) { expect(dsl.murder_payload).to eq("/tmp/app.jar.tgz") }
    with_env(env.merge("files_path" => "/tmp//app.jar.tgz")) do
      expect(dsl.murder_payload).to eq("/tmp/app.jar.tgz") # the tasks that only read it go on
      expect { dsl.murder_file_to_copy }.to raise_error(Capistrano::Murder::Error, /files_path .* is where .* downloads? go/)
    end
  end

  def with_env(vars)
    saved = vars.keys.to_h { |k| [k, ENV.fetch(k, nil)] }
    vars.each { |k, v| ENV[k] = v }
    yield
  ensure
    saved.each { |k, v| ENV[k] = v }
  end
end
