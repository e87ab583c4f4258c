# frozen_string_literal: true

# Twitter's Murder tasks on Capistrano 3, loaded by `require "capistrano/murder"`.
# Evaluated in the plugin (Capistrano::Murder::Tasks): the helpers of
# Capistrano::Murder::Helpers are its methods, usable in every task (but not
# inside `on` blocks, which run in SSHKit's backend: values are taken into
# local variables first).

namespace :murder do
  desc "Install the murder binary in remote_murder_path on every murder host (hosts pass it on to each other)"
  task :distribute_files do
    binary = fetch(:murder_binary)
    raise Capistrano::Murder::Error, "murder binary #{binary} not found" unless File.executable?(binary)

    dir = S.remote_murder_path(fetch(:remote_murder_path))
    digest = ::Murder::Remote.sha256(binary)
    outdated = Queue.new
    on murder_hosts, in: :parallel do |host|
      # Every deploy calls this: only hosts whose copy is not this binary
      # (its digest, recorded at install) get it, if it runs there.
      uname, installed = capture(:sh, "-c", *S.args('uname -sm; [ -x "$1" ] && cat "$1.sha256"', "sh", "#{dir}/murder"),
                                 raise_on_non_zero_exit: false).lines.map(&:strip)
      outdated << [S.host_key(host), uname] unless installed == digest
    end
    unames = Array.new(outdated.size) { outdated.pop }.to_h
    wrong = ::Murder::Binary.mismatch(binary, unames)
    raise Capistrano::Murder::Error, "murder: not installed anywhere: #{wrong}" if wrong

    # The configuration's own servers (the ones `on` yields are copies).
    hosts = murder_hosts.select { |h| unames.key?(S.host_key(h)) }
    distribution = Capistrano::Murder::BinaryDistribution.new(
      self, binary: binary, dir: dir, port: fetch(:murder_binary_port), fanout: fetch(:murder_binary_fanout)
    )
    distribution.run(hosts)
    unless hosts.empty?
      run_locally do
        info format("murder: installed the murder binary on %d hosts, %d of them from here", hosts.size,
                    distribution.central.size)
      end
    end
  end

  desc "Start the tracker (port tracker_port) on every tracker host"
  task :start_tracker do
    murder = remote_murder
    dir = fetch(:remote_murder_path)
    port = fetch(:tracker_port)
    interval = fetch(:murder_tracker_interval)
    pidfile = "#{dir}/run/tracker.pid"
    on within_filter!(murder_trackers, "tracker"), in: :parallel do
      execute :mkdir, "-p", *S.args("#{dir}/torrents", "#{dir}/run")
      # A tracker already running keeps serving: starting is idempotent.
      running = test(:sh, "-c", *S.args("#{S::ALIVE_SH}murder_alive \"$1\"", "murder-alive", pidfile))
      unless running
        execute *S.command(murder, "tracker", "--port", port, "--interval", interval, "--allow-dir", "#{dir}/torrents",
                                "--max-peers-per-address", fetch(:murder_max_peers_per_address),
                                "--pidfile", pidfile, "--daemon", "--log", "#{dir}/run/tracker.log")
      end
    end
  end

  desc "Stop the tracker on every tracker host (succeeds when none runs)"
  task :stop_tracker do
    stop_murder(murder_trackers, "tracker.pid")
  end

  desc "Pack files_path on the seeder into temp_path/TAG.tgz and make its torrent"
  task :create_torrent do
    murder = remote_murder
    prepacked = fetch(:murder_prepacked, nil) # the deploy strategy packed it here already
    payload = murder_payload
    torrent = murder_torrent
    temp = murder_temp_path
    as_file = S.truthy?("path_is_file")
    files = if prepacked
              nil
            elsif as_file
              murder_file_to_copy
            else
              murder_files_path
            end
    # Every tracker goes in the torrent (the first as `announce`, all in
    # the BEP 12 announce-list).
    trackers = tracker_addresses.flat_map { |addr, port| ["--tracker", "#{addr}:#{port}"] }
    piece = S.piece_length(fetch(:murder_piece_length))
    tree = murder_tree?
    on within_filter!([murder_seeder], "seeder") do |host|
      execute :mkdir, "-p", *S.args(temp)
      extra = piece ? ["--piece-length", piece] : []
      if tree
        raise Capistrano::Murder::Error, "#{host}: #{files} is not a directory" unless test(:test, "-d", *S.args(files))

        execute *S.command(murder, "make-torrent", files, "--align", "--exclude", ".git*", *trackers,
                                "-o", torrent, "-q", *extra)
        next
      end
      if prepacked
        upload! prepacked, payload
      elsif as_file
        raise Capistrano::Murder::Error, "#{host}: #{files} is not a file" unless test(:test, "-f", *S.args(files))

        execute :cp, *S.args(files, payload)
      else
        raise Capistrano::Murder::Error, "#{host}: #{files} is not a directory" unless test(:test, "-d", *S.args(files))

        # Quoted like every word: an unmatched glob fails in zsh, or under
        # bash's failglob, and vanishes under nullglob.
        execute :tar, "-czf", *S.args(payload, "--exclude=.git", "--exclude=.git*", "-C", files, ".")
      end
      execute *S.command(murder, "make-torrent", payload, *trackers, "-o", torrent, "-q", *extra)
    end
    invoke "murder:download_torrent" unless S.truthy?("do_not_download_torrent")
  end

  desc "Fetch the torrent from the seeder to temp_path on this machine"
  task :download_torrent do
    torrent = murder_torrent
    local = local_torrent
    FileUtils.mkdir_p(File.dirname(local))
    on within_filter!([murder_seeder], "seeder") do
      download! torrent, local
    end
  end

  desc "Seed the release from the seeder (allow-lists it on every tracker too)"
  task :start_seeding do
    murder = remote_murder
    torrent = murder_torrent
    payload = murder_payload
    local = local_torrent
    tag = murder_tag
    dir = fetch(:remote_murder_path)
    invoke "murder:download_torrent" unless File.exist?(local)
    on within_filter!(murder_trackers, "tracker"), in: :parallel do
      upload! local, "#{dir}/torrents/#{tag}.torrent"
    end
    on within_filter!([murder_seeder], "seeder") do |host|
      ip = S.announce_ip(host)
      execute *S.command(murder, "seed", torrent, payload, *(ip ? ["--ip", ip] : []),
                              "--pidfile", "#{dir}/run/seed-#{tag}.pid", "--daemon", "--log", "#{dir}/run/seed-#{tag}.log")
    end
  end

  desc "Stop seeding TAG (succeeds when none runs)"
  task :stop_seeding do
    stop_murder(murder_seeder, "seed-#{murder_tag}.pid")
  end

  desc "Stop every seeder murder started on the seeder"
  task :stop_all_seeding do
    stop_murder(murder_seeder, "seed-*.pid")
  end

  desc "Download the release on every peer into destination_path/TAG (extracting it, unless a tree)"
  task :peer do
    murder = remote_murder
    torrent = murder_torrent
    payload = murder_payload
    local = local_torrent
    tag = murder_tag
    temp = murder_temp_path
    run = murder_run_dir
    linger = fetch(:murder_linger)
    as_file = S.truthy?("path_is_file")
    tree = murder_tree?
    no_tag = S.truthy?("no_tag_directory")
    dest = no_tag || as_file ? murder_destination_path : "#{murder_destination_path}/#{tag}"
    # A tree lands in place and reuses what earlier tags beside it hold.
    reuse = tree && !no_tag ? ["--reuse", murder_destination_path] : []
    peer_target = tree ? dest : payload
    unsafe = S.truthy?("unsafe_please_delete")
    invoke "murder:download_torrent" unless File.exist?(local)
    # Progress from the first tracker that answers.
    local_tracker = fetch(:murder_local_tracker, nil)
    trackers = local_tracker ? [local_tracker] : tracker_addresses
    peers = murder_peers
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    results = {}
    watcher = Thread.new do
      Capistrano::Murder::Progress.new(peers.size) { trackers.lazy.filter_map { |t| S.stats(*t) }.first }.watch
    end
    # The first host that fails stops the others' downloads at once, and
    # hosts that have not started theirs do not; the task ends only once
    # every host's thread has (SSHKit raises the first failure it joins
    # while the other threads still run).
    dsl = self
    lock = Mutex.new
    failures = {}
    stopped = []
    begin
      on peers, in: :parallel do |host|
        go_on = lambda do
          raise Capistrano::Murder::Error, S::STOPPED_FOR_ANOTHER if lock.synchronize { !failures.empty? }
        end
        # Each host's own refusal comes before it looks at the others', so
        # that every host that would refuse is named at once.
        occupied = !as_file && test("[ -d #{dest.shellescape} ] && [ -n \"$(ls -A #{dest.shellescape})\" ]")
        if occupied && !unsafe
          raise Capistrano::Murder::Error,
                "#{host}: #{dest} is not empty (set unsafe_please_delete=1 to empty it first)"
        end
        if as_file
          # Into a directory that is there, under the tag's name (as cp does).
          target = test("[ -d #{dest.shellescape} ]") ? "#{dest}/#{tag}" : dest
          if S.same_path?(target, payload)
            raise Capistrano::Murder::Error, "#{host}: #{target} is the download itself, which clean_temp_files " \
                                             "removes: choose another destination_path"
          end
        end
        go_on.call
        execute :mkdir, "-p", *S.args(temp, run)
        if occupied && tree
          # A tree is renamed into place (DEST must not be there): the old
          # one waits aside until the new one is there, and comes back if
          # it never is.
          aside = S.hidden_beside(dest, "murder-old")
          execute :rm, "-rf", *S.args(aside)
          execute :mv, "-T", *S.args(dest, aside)
        end
        upload! local, torrent
        ip = S.announce_ip(host)
        go_on.call
        out = capture(*S.command(murder, "peer", torrent, peer_target, *(ip ? ["--ip", ip] : []), "--linger", linger,
                                      *reuse, "--pidfile", "#{run}/peer-#{tag}.pid", "--progress", "json"))
        summary = out.lines.map { |l| JSON.parse(l) rescue nil }.compact.find { |e| e["event"] == "complete" }
        # SSHKit takes a command that sent no exit status (SSH's
        # `exit-signal`: murder killed) for a success.
        raise Capistrano::Murder::Error, ::Murder::Remote::NO_SUMMARY unless summary

        lock.synchronize { results[S.host_key(host)] = summary }
        if tree
          # In place already: murder renamed its staging area to dest.
          execute :rm, "-rf", *S.args(aside) if aside
        elsif as_file
          copy = S.hidden_beside(target, "murder-copy")
          execute :mkdir, "-p", *S.args(File.dirname(target))
          execute :cp, *S.args(payload, copy)
          # -T: a directory named like the tag is refused, not filled.
          execute :mv, "-fT", *S.args(copy, target)
        else
          # Emptied only once the release is extracted beside what it
          # holds: a host that fails or is stopped before keeps that.
          S.extract_release(self, payload, dest, into: no_tag, emptying: occupied)
        end
      rescue StandardError => e
        why = S.reason(e).delete_prefix("#{host}: ")
        first = lock.synchronize do
          if failures.empty? || !S.stopped_by_us?(why)
            # The first failure, or one of its own (a second full disk).
            failures[S.host_key(host)] = why
            failures.size == 1
          else
            stopped << host.to_s
            false
          end
        end
        if first
          begin
            dsl.stop_murder(peers.reject { |p| p == host }, "peer-#{tag}.pid")
          rescue StandardError => stop_error
            # The host that failed first stays the news.
            warn "murder: could not stop every other host: #{S.reason(stop_error)}"
          end
        end
        # Last: on a host that stopped answering this waits out its
        # keepalives again, and the others are stopped already.
        S.put_back(self, aside, dest) if aside
      end
    ensure
      watcher.kill
    end
    unless failures.empty?
      named = failures.map { |h, why| "#{h}: #{why}" }.join("; also failed on ")
      also = stopped.empty? ? "" : "; stopped on #{stopped.size} other host(s) as a result"
      raise Capistrano::Murder::Error, "murder: failed on #{named}#{also}"
    end
    Capistrano::Murder::Progress.hosts(results)
    Capistrano::Murder::Progress.summary(results, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started)
  end

  desc "Stop the download of TAG on every peer (a peer that hangs)"
  task :stop_peering do
    stop_murder(murder_peers, "peer-#{murder_tag}.pid")
  end

  desc "Stop every download murder started on every peer"
  task :stop_all_peering do
    stop_murder(murder_peers, "peer-*.pid")
  end

  desc "Remove temp_path/TAG.tgz (not a tree's files_path) and its torrent on the peers and the seeder"
  task :clean_temp_files do
    files = if murder_tree?
              [murder_torrent]
            else
              [murder_payload, murder_torrent, "#{murder_temp_path}/.#{File.basename(murder_payload)}.part"]
            end
    on (murder_peers + [murder_seeder]).uniq do
      execute :rm, "-rf", *S.args(files)
    end
  end

  desc "Show what murder runs where"
  task :status do
    run = murder_run_dir
    murder = remote_murder
    on murder_hosts do |host|
      lines = capture(:sh, "-c", *S.args(<<~SH, "murder-status", run), raise_on_non_zero_exit: false)
        #{S::ALIVE_SH}
        for f in "$1"/*.pid; do [ -f "$f" ] || continue; pid=$(cut -d' ' -f1 "$f"); if murder_alive "$f"; then echo "$(basename "$f" .pid) running (pid $pid)"; else echo "$(basename "$f" .pid) stale pidfile"; fi; done
      SH
      installed = test(:test, "-x", *S.args(murder)) ? "murder installed" : "murder not installed"
      info "#{host}: #{installed}#{lines.empty? ? ', nothing running' : "\n  #{lines.split("\n").join("\n  ")}"}"
    end
  end

  # Runs before deploy:starting (no description: not a task to run by
  # hand). Capistrano 2 chose Murder with `set :deploy_via, :murder`;
  # Capistrano 3 ignores that setting and, without the strategy's plugin,
  # ships through its default SCM without a word.
  task :check_strategy do
    if fetch(:deploy_via, nil).to_s == "murder" && !Rake::Task.task_defined?("murder:scm:create_release")
      raise Capistrano::Murder::Error,
            "set :deploy_via, :murder is Capistrano 2's way: in Capistrano 3, add " \
            "`require \"capistrano/murder/scm\"` and `install_plugin Capistrano::Murder::SCM` to the Capfile"
    end
  end

  desc "The whole Murder flow in one command: pack, torrent, seed, peer, clean up"
  task :distribute do
    invoke "murder:distribute_files"
    begin
      invoke "murder:start_tracker"
      invoke "murder:create_torrent"
      invoke "murder:start_seeding"
      peer_or_stop_peering
    ensure
      murder_clean_up("murder:stop_seeding", "murder:stop_tracker", "murder:clean_temp_files")
    end
  end
end
