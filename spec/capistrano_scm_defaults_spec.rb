# frozen_string_literal: true

require "spec_helper"

# The deploy strategy's defaults as a project sees them: Capistrano loads
# its own defaults, then the plugins', then config/deploy.rb and the stage.
# Runs `cap` on a scratch project (no servers are contacted).
RSpec.describe "Capistrano::Murder::SCM defaults" do
  STRATEGY = <<~RUBY
    require "capistrano/murder/scm"
    install_plugin Capistrano::Murder::SCM
  RUBY

  # `cap production TASK` in a scratch project whose Capfile requires
  # Capistrano's setup, then `first` (Capistrano's deploy tasks and
  # murder's), then `capfile`.
  def cap_in_project(task, capfile:, deploy_rb:, first: "require \"capistrano/deploy\"\nrequire \"capistrano/murder\"\n")
    app = File.join(tmpdir, "app")
    FileUtils.mkdir_p(File.join(app, "config/deploy"))
    File.write(File.join(app, "Capfile"), "require \"capistrano/setup\"\n#{first}#{capfile}")
    File.write(File.join(app, "config/deploy.rb"), "set :application, \"app\"\n#{deploy_rb}")
    File.write(File.join(app, "config/deploy/production.rb"), "")
    env = { "RUBYLIB" => [File.join(ROOT, "lib"), ENV.fetch("RUBYLIB", nil)].compact.join(":"), "BUNDLE_GEMFILE" => nil }
    Open3.capture2e(env, "cap", "production", task, chdir: app)
  end

  def branch_with(deploy_rb)
    out, status = cap_in_project("show_branch", deploy_rb: deploy_rb,
                                                capfile: "#{STRATEGY}task(:show_branch) { puts \"branch=\#{fetch(:branch)}\" }\n")
    raise "cap failed:\n#{out}" unless status.success?

    out[/^branch=(.*)$/, 1]
  end

  # Capistrano's own defaults say "master" (for its git plugin's remote):
  # a project that names no branch shipped master, not what it has
  # checked out, though the README promised HEAD.
  it "ships what is checked out here (HEAD) unless the project names a branch" do
    expect(branch_with("")).to eq("HEAD")
    expect(branch_with("set :branch, \"master\"\n")).to eq("master")
    expect(branch_with("set :branch, \"release-7\"\n")).to eq("release-7")
  end

  # Capistrano 2 chose Murder with `set :deploy_via, :murder`, which
  # Capistrano 3 ignores: a Capfile ported as it was shipped through
  # Capistrano's default SCM without a word.
  it "refuses a deploy that asks for murder with Capistrano 2's deploy_via alone" do
    out, status = cap_in_project("deploy", capfile: "", deploy_rb: "set :deploy_via, :murder\n")
    expect(status).not_to be_success
    expect(out).to include("install_plugin Capistrano::Murder::SCM")
    # Whatever the order the Capfile requires the two in.
    out, status = cap_in_project("deploy", capfile: "require \"capistrano/deploy\"\n", deploy_rb: "set :deploy_via, :murder\n",
                                           first: "require \"capistrano/murder\"\n")
    expect(status).not_to be_success
    expect(out).to include("install_plugin Capistrano::Murder::SCM")
  end
end
