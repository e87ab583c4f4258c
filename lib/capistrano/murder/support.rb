# frozen_string_literal: true

require "fileutils"
require "ipaddr"
require "json"
require "net/http"
require "shellwords"
require "murder/binary"
require "murder/progress"
require "murder/remote"

module Capistrano
  module Murder
    # A problem with the arguments or a host; the message names which. The
    # Capistrano tasks raise it (errors of the engine itself stay
    # `::Murder::Error`s).
    class Error < StandardError; end

    # What the murder: tasks share: validated arguments, paths, roles and
    # escaped command lines (SSHKit joins arguments with spaces and does not
    # quote them, so every argument goes through Shellwords here).
    #
    # @api private
    module Support
      # What a tag may be: the rule of {::Murder::Remote::TAG}.
      TAG = ::Murder::Remote::TAG
      # Why a host goes no further once another host failed (see {stopped_by_us?}).
      STOPPED_FOR_ANOTHER = "stopped: another host failed"

      module_function

      # Turns on SSH keepalives ({::Murder::Remote::SSH_KEEPALIVE}) for
      # every connection Capistrano makes: a host that stops answering fails
      # its command instead of hanging the deploy. The project's own
      # :ssh_options win, key by key (`keepalive: false` turns them off).
      #
      # @return [void]
      def keep_ssh_alive
        SSHKit::Backend::Netssh.configure do |ssh|
          ssh.ssh_options = ::Murder::Remote::SSH_KEEPALIVE.merge(ssh.ssh_options || {})
        end
      end

      # The revision of a tree shipped from :murder_source_dir:
      # "dir:NAME@TIME". Capistrano writes the revision into REVISION and
      # revisions.log through a remote shell without quoting it (`echo
      # "REV" > REVISION`), so NAME keeps only characters plain in any
      # shell; the others become "_".
      #
      # @param dir [String] the directory
      # @return [String]
      def dir_revision(dir)
        name = File.basename(dir).gsub(/[^A-Za-z0-9._+-]/, "_")
        "dir:#{name}@#{File.mtime(dir).utc.strftime('%Y%m%d%H%M%S')}"
      end

      # The murder binary the gem built (see {::Murder.binary}).
      #
      # @return [String] its path
      # @raise [Capistrano::Murder::Error] when there is none
      def default_binary
        require "murder/binary"
        ::Murder.binary
      rescue ::Murder::Error => e
        raise Error, "#{e.message}, or set :murder_binary"
      end

      # Whether :murder_compression asks for gzip: :gzip (the default) or
      # :none, for releases that are compressed already (gzip gains nothing
      # there and costs seconds on every host).
      #
      # @param compression [Symbol, String] `:gzip` or `:none`
      # @return [Boolean]
      # @raise [Capistrano::Murder::Error] for anything else
      def gzip?(compression)
        case compression.to_s
        when "gzip" then true
        when "none" then false
        else raise Error, "murder_compression must be :gzip or :none, not #{compression.inspect}"
        end
      end

      # Each argument quoted for the remote shell.
      #
      # @example
      #   Support.args("a b", ["c"]) # => ["a\\ b", "c"]
      #
      # @param words [Array<#to_s, Array>] words, arrays of them flattened
      # @return [Array<String>] each word shell-escaped
      def args(*words)
        words.flatten.map { |w| w.to_s.shellescape }
      end

      # The murder binary at `path` and its arguments, every word quoted
      # for the remote shell: SSHKit's `execute` quotes none of them, the
      # command itself included. `path` holds no whitespace
      # ({remote_murder_path} refuses it): SSHKit takes a command with
      # whitespace for a whole shell line and drops its arguments.
      #
      # @example
      #   Support.command("/srv/R&D/murder", "stop") # => ["/srv/R\\&D/murder", "stop"]
      #
      # @param path [#to_s] the binary on the host
      # @param words [Array<#to_s, Array>] its arguments
      # @return [Array<String>] for `execute(*...)` or `capture(*...)`
      def command(path, *words)
        [path.to_s.shellescape, *args(*words)]
      end

      # The line of a failed remote command's error that says why: murder's
      # own last word (not its prompt for the ticket), a full disk or an
      # error; else a signal that killed murder (SSHKit's "exit status:
      # 137"); else the first line.
      #
      # @param error [Exception] what SSHKit (or a task) raised
      # @return [String]
      def reason(error)
        lines = error.message.lines.reject { |line| line.include?(::Murder::Remote::PROMPT) }
        said = lines.grep(/murder: |No space|error/i).last
        return said.strip if said

        ::Murder::Remote.ended(error.message[/exit status: (\d+)/, 1].to_i) || lines.first.to_s.strip
      end

      # Checks a release tag.
      #
      # @param value [#to_s] the tag
      # @return [String] the tag
      # @raise [Capistrano::Murder::Error] when it is empty or does not
      #   match {TAG}
      def tag(value)
        tag = value.to_s
        raise Error, "tag is required: cap ... tag=NAME (or set :default_tag)" if tag.empty?
        unless tag.match?(TAG)
          raise Error, "tag #{tag.inspect} is not allowed: use letters, digits, '.', '_' and '-', " \
                       "starting with a letter or a digit (no '/' or shell characters)"
        end

        tag
      end

      # Checks a TCP port setting: 0 or nil pick any free port.
      #
      # @param value [Integer, String, nil] the setting
      # @param name [String] the setting's name, for the message
      # @return [Integer] the port, 0 for any free one
      # @raise [Capistrano::Murder::Error] when it is not a port
      def port(value, name)
        return 0 if value.nil?

        port = value.is_a?(Integer) ? value : Integer(value.to_s, 10, exception: false)
        return port if port&.between?(0, 65_535)

        raise Error, "#{name} #{value.inspect}: give a TCP port (1 to 65535), or 0 for any free one"
      end

      # How SSHKit connects to `host`, for a connection of murder's own
      # (the relay's): the deploy's :ssh_options under the server's own.
      #
      # @param host [Capistrano::Configuration::Server]
      # @return [Array(String, String, Hash)] the host name, the user and
      #   the options for `Net::SSH.start`
      def net_ssh(host)
        copy = host.dup
        copy.ssh_options = SSHKit::Backend::Netssh.config.ssh_options.merge(host.ssh_options || {})
        [String(host.hostname), host.username, copy.netssh_options]
      end

      # Checks :murder_exclude: names (globs such as ".git" or "*.log"),
      # matched against each file's and directory's name at any depth.
      #
      # @example
      #   Support.exclude([".git", "*.log"]) # => [".git", "*.log"]
      #   Support.exclude(nil)                # => []
      # @param value [Array<String, Symbol>, String, nil] the setting
      # @return [Array<String>]
      # @raise [Capistrano::Murder::Error] for an empty name, one with a
      #   "/" (a path never matches a name), or control characters
      def exclude(value)
        Array(value).map do |glob|
          name = glob.to_s
          if name.empty? || name.include?("/") || name.match?(/[[:cntrl:]]/)
            raise Error, "murder_exclude #{glob.inspect}: give names (globs such as \".git\" or \"*.log\"), " \
                         "matched at any depth, with no \"/\""
          end

          name
        end
      end

      # Checks a path argument.
      #
      # @param value [#to_s] the path
      # @param name [String] the argument's name, for the message
      # @return [String] the path without a trailing "/" ("/" stays "/")
      # @raise [Capistrano::Murder::Error] when it is empty, not absolute,
      #   holds a `..` component or control characters
      def absolute_path(value, name)
        path = value.to_s
        raise Error, "#{name} is required" if path.empty?
        raise Error, "#{name} #{path.inspect} must be an absolute path" unless path.start_with?("/")
        raise Error, "#{name} #{path.inspect} must not contain '..'" if path.split("/").include?("..")
        raise Error, "#{name} #{path.inspect} holds control characters" if path.match?(/[[:cntrl:]]/)

        path.chomp("/").then { |p| p.empty? ? "/" : p }
      end

      # Extracts the archive PAYLOAD (a tar, gzip'd or not: tar tells which)
      # into DEST on the host behind BACKEND (an SSHKit backend, inside
      # `on`). GNU tar's defaults keep every write inside: members with '..'
      # are refused, leading '/' is stripped, and a member under a symlink
      # the archive made fails (tar creates such links only at the end). It
      # extracts into a staging directory and moves the result into place,
      # so a failed extraction leaves neither a half release at DEST nor the
      # staging directory. The staging directory's name starts with a dot:
      # one an interrupted deploy left is no release to `ls`, which
      # Capistrano's rollback lists releases with.
      #
      # A DEST that is not there yet is made: the staging directory lies
      # beside it and is renamed to it. With `into` (Murder's
      # no_tag_directory), or when DEST is a directory already (empty, or
      # emptied by unsafe_please_delete), DEST itself stays (a symlink, a
      # mount point, its owner and mode): the staging directory
      # (`.murder-extract.XXXXXX`) lies inside it and its entries move up
      # into DEST, which must hold nothing else: with `emptying` (Murder's
      # unsafe_please_delete) what DEST held goes once the archive is
      # extracted, so a host whose extraction fails keeps it.
      #
      # @param backend [SSHKit::Backend::Abstract] the host's backend
      # @param payload [String] the archive on the host
      # @param dest [String] where the release goes
      # @param into [Boolean] extract into DEST rather than replace it
      # @param emptying [Boolean] remove what DEST holds first (once the
      #   archive is extracted beside it)
      # @return [void]
      # @raise [SSHKit::Runner::ExecuteError] when a command fails there
      def extract_release(backend, payload, dest, into: false, emptying: false)
        into ||= backend.test(:test, "-d", *args(dest))
        if into
          backend.execute :mkdir, "-p", *args(dest)
          # A name of its own: the archive may hold anything at its top.
          staging = backend.capture(:mktemp, "-d", *args(File.join(dest, ".murder-extract.XXXXXX"))).strip
        else
          staging = hidden_beside(dest, "murder-extract")
          backend.execute :rm, "-rf", *args(staging)
          backend.execute :mkdir, "-p", *args(staging)
        end
        begin
          backend.execute :tar, "-xf", *args(payload), "--no-same-owner", "--no-overwrite-dir", "-C", *args(staging)
        rescue StandardError
          backend.execute :rm, "-rf", *args(staging)
          raise
        end
        if into
          if emptying
            # -H: a symlinked DEST is followed, not taken for a leaf.
            backend.execute :find, *args("-H", dest, "-mindepth", "1", "-maxdepth", "1", "!", "-name",
                                         File.basename(staging), "-exec", "rm", "-rf", "{}", "+")
          end
          backend.execute :find, *args(staging, "-mindepth", "1", "-maxdepth", "1", "-exec", "mv", "-t", dest, "{}", "+")
          backend.execute :rmdir, *args(staging)
        else
          backend.execute :rm, "-rf", *args(dest)
          backend.execute :mkdir, "-p", *args(File.dirname(dest))
          backend.execute :mv, *args(staging, dest)
        end
      end

      # Moves a destination that was set aside back to DEST, unless
      # something is there now (the new release, placed after all).
      # Best effort: the host has failed already, and that is the news.
      #
      # @param backend [SSHKit::Backend::Abstract]
      # @param aside [String]
      # @param dest [String]
      # @return [void]
      def put_back(backend, aside, dest)
        script = '[ -e "$2" ] || [ ! -e "$1" ] || mv -T "$1" "$2"'
        backend.execute(:sh, *args("-c", script, "put-back", aside, dest))
      rescue StandardError => e
        warn "murder: #{dest} stays at #{aside}: #{reason(e)}"
      end

      # Whether two absolute paths name the same place as text ("/tmp//a"
      # and "/tmp/a/." do; links are not followed).
      #
      # @param a [String]
      # @param b [String]
      # @return [Boolean]
      def same_path?(a, b)
        File.expand_path(a) == File.expand_path(b)
      end

      # PATH's sibling for work in progress, DIR/.NAME.SUFFIX: a dot name,
      # so that `ls` (Capistrano's list of releases) never shows it.
      #
      # @param path [String]
      # @param suffix [String]
      # @return [String]
      def hidden_beside(path, suffix)
        File.join(File.dirname(path), ".#{File.basename(path)}.#{suffix}")
      end

      # Whether a host's failure (its {reason}) is the deployer stopping
      # it once another host failed: told to go no further, or its
      # `murder peer` interrupted by `murder stop`.
      #
      # @param why [String]
      # @return [Boolean]
      def stopped_by_us?(why)
        why.include?(STOPPED_FOR_ANOTHER) || why.include?("murder: interrupted")
      end

      # Whether the command line set the ENV variable `name` to something
      # other than "0", "false" or "no" (in any case).
      #
      # @param name [String] the variable
      # @return [Boolean]
      def truthy?(name)
        value = ENV.fetch(name, nil)
        !value.nil? && !%w[0 false no].include?(value.downcase)
      end

      # The address a host announces: its murder_ip property, else its
      # name when that is an IP address, else none (the route to the tracker).
      #
      # @param host [Capistrano::Configuration::Server]
      # @return [String, nil]
      # @raise [Capistrano::Murder::Error] when murder_ip is not an IP
      #   address (a name was ignored: the host announced another address)
      def announce_ip(host)
        given = host.properties.fetch(:murder_ip)
        return ip_literal(host.hostname) unless given

        ip_literal(given) or
          raise Error, "#{host}: murder_ip #{given.to_s.inspect} is not an IP address (the address this host announces)"
      end

      # `value` when it is an IPv4 or IPv6 address (no prefix, no brackets).
      #
      # @param value [#to_s]
      # @return [String, nil]
      def ip_literal(value)
        text = value.to_s
        return nil if text.include?("/")

        IPAddr.new(text)
        text
      rescue IPAddr::InvalidAddressError
        nil
      end

      # A tracker host's `/stats.json`, for the progress line.
      #
      # @param host [String] the tracker's address
      # @param port [Integer] its port
      # @return [Hash, nil] nil on any error (it is only progress)
      def stats(host, port)
        JSON.parse(Net::HTTP.get(URI("http://#{url_host(host)}:#{port}/stats.json")))
      rescue StandardError
        nil
      end

      # A host as a URL names it: an IPv6 address in brackets.
      #
      # @example
      #   Support.url_host("2001:db8::5") # => "[2001:db8::5]"
      #
      # @param host [#to_s] a name or an address
      # @return [String]
      def url_host(host)
        host = host.to_s
        host.include?(":") && !host.start_with?("[") ? "[#{host}]" : host
      end

      # Runs the block with SSHKit's pty off (`set :pty, true` turns it on
      # for every command), then restores the setting. A deploy's peer
      # command reads its ticket on stdin and prompts on stderr: a pty
      # would echo the ticket, secret included, into the output, merge the
      # prompt into stdout (the deploy then waits for it for ever) and cut
      # the ticket's long line.
      #
      # @yield with the pty off
      # @return [Object] what the block returned
      def without_pty
        config = SSHKit::Backend::Netssh.config
        pty = config.pty
        config.pty = false
        yield
      ensure
        config.pty = pty if config
      end

      # A server's name in a deploy's records, votes and messages: its host
      # name, with its SSH port when it sets one. Capistrano tells servers
      # apart by both (two may share a name, on different ports), and a
      # deploy must too: SSHKit's Host#to_s is the name alone.
      #
      # @example
      #   Support.host_key(SSHKit::Host.new("app:2202")) # => "app:2202"
      #
      # @param host [SSHKit::Host, String]
      # @return [String]
      def host_key(host)
        return host.to_s unless host.respond_to?(:hostname)

        host.port ? "#{host.hostname}:#{host.port}" : host.hostname.to_s
      end

      # Where murder lives on the hosts, checked: an absolute path (a `~`
      # would reach the remote shell quoted, as a directory named `~`) with
      # no whitespace (SSHKit runs a command whose first word holds
      # whitespace as a raw string, dropping every argument).
      #
      # @param dir [#to_s] :remote_murder_path
      # @return [String]
      # @raise [Capistrano::Murder::Error] for a relative path or whitespace
      def remote_murder_path(dir)
        path = absolute_path(dir, "remote_murder_path")
        if path.match?(/\s/)
          raise Error, "remote_murder_path #{path.inspect} holds whitespace: murder runs from there as a command " \
                       "(set :remote_murder_path to a path without it)"
        end

        path
      end

      # :murder_reuse as the `murder peer --reuse-mode` it means: "link"
      # (hard links), "copy", or nil for :none (no reuse).
      #
      # @param value [Symbol, String] `:link`, `:copy` or `:none`
      # @return [String, nil]
      # @raise [Capistrano::Murder::Error] for anything else
      def reuse_mode(value)
        case value.to_s
        when "link", "copy" then value.to_s
        when "none" then nil
        else raise Error, "murder_reuse must be :link, :copy or :none, not #{value.inspect}"
        end
      end

      # A POSIX shell function, `murder_alive PIDFILE`: true when the
      # pidfile names a live process that is the one that wrote it. murder
      # writes the pid and the process's start time (as /proc shows it);
      # `murder stop` checks both, and so does this, so that a pid reused
      # after a reboot or a kill is not taken for a tracker or a seeder.
      ALIVE_SH = <<~'SH'
        murder_alive() {
          set -- $(cat "$1" 2>/dev/null)
          pid=$1 started=$2
          [ -n "$pid" ] && [ -n "$started" ] || return 1
          stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
          set -- ${stat##*)}
          [ "$1" != Z ] && [ "$1" != X ] || return 1
          [ "$started" = 0 ] && return 0
          shift 19
          [ "$1" = "$started" ]
        }
      SH

      # :murder_piece_length as a number of bytes, the same for the deploy
      # strategy (the native extension) and Murder's tasks (`murder
      # make-torrent --piece-length`); the core checks the range.
      #
      # @param value [Integer, String, nil] bytes, or nil to let murder choose
      # @return [Integer, nil]
      # @raise [Error] for anything that is not a whole number of bytes
      def piece_length(value)
        case value
        when nil then nil
        when Integer then value
        when /\A\d+\z/ then Integer(value, 10)
        else raise Error, "murder_piece_length must be a number of bytes (e.g. 1048576), not #{value.inspect}"
        end
      end

      # Whether :murder_release ships a tree (:tree) or one archive (:archive).
      #
      # @param value [Symbol, String] `:tree` or `:archive`
      # @return [Boolean]
      # @raise [Capistrano::Murder::Error] for anything else
      def tree?(value)
        case value.to_s
        when "tree" then true
        when "archive" then false
        else raise Error, "murder_release must be :tree or :archive, not #{value.inspect}"
        end
      end

      # Installs the murder binary on the host behind BACKEND (inside `on`),
      # through a temporary name, so a host never runs half a binary, and
      # records its SHA-256 beside it (murder.sha256) once it is in place.
      # It also makes DIR/run, for pidfiles.
      #
      # @param backend [SSHKit::Backend::Abstract] the host's backend
      # @param binary [String] the local murder binary
      # @param dir [String] where it goes on the host
      # @param sha256 [String] its hex SHA-256 (computed when not given)
      # @return [void]
      # @raise [SSHKit::Runner::ExecuteError] when a command fails there
      def install_binary(backend, binary, dir, sha256 = ::Murder::Remote.sha256(binary))
        backend.execute :mkdir, "-p", *args(dir, "#{dir}/run")
        backend.upload! binary, "#{dir}/murder.new"
        backend.execute :chmod, "755", *args("#{dir}/murder.new")
        backend.execute :mv, "-f", *args("#{dir}/murder.new", "#{dir}/murder")
        backend.execute :sh, "-c", *args('echo "$1" > "$2.new" && mv -f "$2.new" "$2"', "sh", sha256, "#{dir}/murder.sha256")
      end

      # Whether every one of HOSTS held the murder binary of digest SHA256
      # after the last deploy from this machine, by the record in RECORD
      # (see {remember_binary}). Then the deploy skips the check round of
      # murder:distribute_files: the peer command checks the binary anyway
      # and installs it on a host where it is missing, so the record only
      # saves a round trip and is never trusted for what runs.
      #
      # @param record [String] the record's path (in the deployer's cache)
      # @param sha256 [String] the binary's hex SHA-256
      # @param hosts [Array<SSHKit::Host, String>] (by {.host_key})
      # @return [Boolean] false too when there is no readable record
      def binary_known?(record, sha256, hosts)
        data = JSON.parse(File.read(record))
        data.is_a?(Hash) && data["sha256"] == sha256 && (hosts.map { |h| host_key(h) } - Array(data["hosts"])).empty?
      rescue SystemCallError, JSON::ParserError
        false
      end

      # Records that HOSTS hold the binary of digest SHA256 (written whole,
      # through a temporary name: a crash leaves the old record or none).
      #
      # @param record [String]
      # @param sha256 [String]
      # @param hosts [Array<SSHKit::Host, String>] (by {.host_key})
      # @return [void]
      # @raise [SystemCallError] when the cache directory cannot be written
      def remember_binary(record, sha256, hosts)
        ::Murder::Remote.write_atomically(record,
                                          JSON.generate("sha256" => sha256, "hosts" => hosts.map { |h| host_key(h) }.uniq.sort))
      end

      # @param bytes [Numeric]
      # @return [String] as {::Murder::Progress.human}
      def human(bytes) = ::Murder::Progress.human(bytes)
    end
  end
end

module Capistrano
  module Murder
    # {::Murder::Progress}, for the task files.
    #
    # @api private
    Progress = ::Murder::Progress
    # {::Murder::Remote}, for the task files.
    #
    # @api private
    Remote = ::Murder::Remote
  end
end
