# frozen_string_literal: true

require "capistrano/scm/plugin"

# Ships nothing: only makes release_path. What Capistrano's own tasks cost
# in a deploy, for bench/release to tell murder's share apart.
class NullStrategy < Capistrano::SCM::Plugin
  def register_hooks
    after "deploy:new_release_path", "null_copy:create_release"
    before "deploy:set_current_revision", "null_copy:set_current_revision"
  end

  def define_tasks
    namespace :null_copy do
      task :create_release do
        path = release_path
        on release_roles(:all) do
          execute :mkdir, "-p", path
        end
      end

      task :set_current_revision do
        set :current_revision, "none"
      end
    end
  end
end
