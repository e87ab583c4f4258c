# frozen_string_literal: true

require "capistrano/scm/plugin"

# What capistrano-rsync does: rsync the release from this machine to every
# host in parallel, each into its release_path, the second release with
# --link-dest to the previous one (unchanged files become hard links). The
# everyday-deploy baseline for bench/release.
class RsyncFromDeployer < Capistrano::SCM::Plugin
  def register_hooks
    after "deploy:new_release_path", "rsync_copy:create_release"
    before "deploy:set_current_revision", "rsync_copy:set_current_revision"
  end

  def define_tasks
    namespace :rsync_copy do
      task :create_release do
        source = fetch(:murder_source_dir)
        farm = ENV.fetch("FARM_DIR")
        ssh = "ssh -F #{farm}/ssh_config -o BatchMode=yes"
        releases = releases_path.to_s
        release = release_path.to_s
        previous = nil
        on release_roles(:all).first do
          previous = capture(:ls, "-1t", releases, raise_on_non_zero_exit: false).split.first
        end
        link_dest = previous ? ["--link-dest=#{releases}/#{previous}"] : []
        threads = release_roles(:all).map do |host|
          Thread.new do
            ok = system("rsync", "-a", "--delete", *link_dest, "-e", ssh, "#{source}/", "root@#{host.hostname}:#{release}/",
                        out: File::NULL)
            raise "rsync to #{host} failed" unless ok
          end
        end
        threads.each(&:join)
      end

      task :set_current_revision do
        set :current_revision, "rsync"
      end
    end
  end
end
