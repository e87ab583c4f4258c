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
end
