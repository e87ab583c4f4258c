# frozen_string_literal: true

require "capistrano/scm/plugin"
require "tmpdir"

# What Capistrano 2's copy strategy did: pack once here, upload the archive
# from this machine to every host, extract it there. The baseline for
# bench/deploy.
class CentralCopy < Capistrano::SCM::Plugin
  def register_hooks
    after "deploy:new_release_path", "central_copy:create_release"
    before "deploy:set_current_revision", "central_copy:set_current_revision"
  end

  def define_tasks
    namespace :central_copy do
      task :create_release do
        dir = Dir.mktmpdir("copy-release-")
        archive = File.join(dir, "release.tgz")
        gzip = Capistrano::Murder::Support.gzip?(fetch(:murder_compression, :gzip))
        system("tar", gzip ? "-czf" : "-cf", archive, "-C", fetch(:murder_source_dir), ".", exception: true)
        remote = "/tmp/#{File.basename(release_path.to_s)}.tgz"
        on release_roles(:all), in: :parallel do
          upload! archive, remote
          execute :mkdir, "-p", release_path
          execute :tar, "-xf", remote, "-C", release_path
          execute :rm, "-f", remote
        end
        FileUtils.rm_rf(dir)
      end

      task :set_current_revision do
        set :current_revision, "copy"
      end
    end
  end
end
