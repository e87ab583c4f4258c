# frozen_string_literal: true

# The murder deploy strategy's tasks (Capistrano::Murder::SCM).

namespace :murder do
  namespace :scm do
    desc "Pack the revision here and ship it through the swarm into release_path"
    task :create_release do
      tag = File.basename(release_path.to_s)
      local_dir = Dir.mktmpdir("murder-release-")
      archive = File.join(local_dir, "#{tag}.tgz")
      set :murder_revision, pack(archive)
      run_locally { info "murder: packed #{File.size(archive)} bytes into #{archive}" }

      # The release takes the place of Murder's tag and destination.
      ENV["tag"] = tag
      ENV["destination_path"] = releases_path.to_s
      ENV.delete("no_tag_directory")
      ENV.delete("path_is_file")
      set :murder_prepacked, archive
      begin
        invoke "murder:distribute_files"
        if fetch(:murder_seed_locally)
          # This machine tracks and seeds, through the native extension:
          # the release never takes a detour through a seeder host.
          seed_locally(archive, tag) { invoke "murder:peer" }
        else
          invoke "murder:start_tracker"
          invoke "murder:create_torrent"
          invoke "murder:start_seeding"
          invoke "murder:peer"
        end
      ensure
        unless fetch(:murder_seed_locally)
          invoke "murder:stop_seeding"
          invoke "murder:stop_tracker"
        end
        invoke "murder:clean_temp_files"
        FileUtils.rm_rf(local_dir)
      end
    end

    desc "Record the revision that was packed"
    task :set_current_revision do
      set :current_revision, fetch(:murder_revision)
    end
  end
end
