# frozen_string_literal: true

require "shellwords"
require "socket"
require_relative "error"
require_relative "remote"

module Murder
  # This machine's tracker and seed, reached through one server, for
  # servers that cannot open connections to this machine (a deployer
  # behind NAT, a CI runner): Capistrano's `set :murder_relay, true`,
  # {RakeTask#relay}. Over an SSH connection of its own to that server,
  # it asks sshd for remote forwards from the server's loopback to this
  # machine's ports (sshd binds them on loopback only) and runs `murder
  # relay` there, which listens on the same port numbers on every address
  # of the server and passes each connection on to those forwards. The
  # connection lives until {#stop}; its end ends the relay (it runs
  # `--while-stdin-open`).
  #
  # @api private
  class Relay
    # The server's murder is not the one this deploy ships: install it
    # there and start again.
    class Outdated < Error
      # @return [String] the server's `uname -sm`
      attr_reader :uname

      def initialize(host, uname)
        @uname = uname
        super("murder: the relay on #{host} has not this deploy's murder (#{uname})")
      end
    end

    # Bytes read from a forwarded connection's socket at a time (net-ssh's
    # own forwarding reads 8 KiB per turn of its loop; bench/release's first
    # release through the relay took 13.8 s with that, 12.2 and 14.1 s with
    # this: no difference the runs' spread can show).
    CHUNK = 256 * 1024
    # Bytes a forwarded connection may have waiting for the SSH window
    # before its socket is read again: the seed is held back, not buffered
    # here without end.
    BACKLOG = 4 * 1024 * 1024

    # Reads a forwarded socket `CHUNK` bytes at a time.
    #
    # @api private
    module LargeReads
      def fill(count = CHUNK) = super(count)
    end

    # Seconds to wait for the forwards and `murder relay: ready`.
    READY_TIMEOUT = 20
    # The script the relay runs with `sh -c`: `$1` murder, `$2` its
    # SHA-256 (the binary must be the one this deploy ships, as for a
    # peer: ::Murder::Remote::SCRIPT says so alike), then `murder
    # relay`'s arguments.
    SCRIPT = <<~'SH'
      murder=$1 sha=$2
      shift 2
      if [ ! -x "$murder" ] || [ "$(cat "$murder.sha256" 2>/dev/null)" != "$sha" ]; then
        echo "murder-binary-outdated: $(uname -sm)" >&2
        exit 97
      fi
      exec "$murder" relay "$@"
    SH

    # @param host [#to_s] the relaying server, as errors name it
    # @param ssh [Array(String, String, Hash)] its host name, user and
    #   options for `Net::SSH.start`
    # @param murder [String] the murder binary there
    # @param sha256 [String] its expected SHA-256 (hex)
    # @param ports [Array<Integer>] this machine's ports to relay, each
    #   on the same number at the server
    def initialize(host, ssh:, murder:, sha256:, ports:)
      @host = host
      @ssh = ssh
      @murder = murder
      @sha256 = sha256
      @ports = ports
      @lock = Mutex.new
      @changed = ConditionVariable.new
      @state = :starting
      @why = nil
    end

    # Connects, forwards and starts the relay; returns once it listens.
    #
    # @return [self]
    # @raise [Outdated] when the server's murder is not this deploy's
    # @raise [Murder::Error] naming the server and why (SSH,
    #   a forward sshd refused, the relay's own error, a timeout)
    def start
      # Loaded here: RakeTask names net-ssh as missing itself, when it is.
      require "net/ssh"
      @thread = Thread.new { run }
      deadline = clock + READY_TIMEOUT
      @lock.synchronize do
        @changed.wait(@lock, deadline - clock) while @state == :starting && clock < deadline
        @why ||= "not ready after #{READY_TIMEOUT} s" if @state == :starting
      end
      return self if @state == :ready

      stop
      raise Outdated.new(@host, @outdated) if @outdated

      raise Error, "murder: the relay on #{@host} failed: #{@why}"
    end

    # @return [Boolean] whether it relays (started, not stopped, not ended)
    def running?
      @lock.synchronize { @state == :ready && !@stopping }
    end

    # Why the relay ended before {#stop}, if it did.
    #
    # @return [String, nil]
    def failure
      @lock.synchronize { @state == :ended && !@stopping ? @why : nil }
    end

    # Ends the relay and closes the connection (the relay ends with its
    # standard input); waits for both.
    #
    # @return [void]
    def stop
      @lock.synchronize { @stopping = true }
      @thread&.join(10) || @thread&.kill
    end

    private

    def clock = Process.clock_gettime(Process::CLOCK_MONOTONIC)

    def settle(state, why = nil)
      @lock.synchronize do
        @why ||= why
        @state = state unless @state == :ended
        @changed.broadcast
      end
    end

    def stopping? = @lock.synchronize { @stopping }

    # The thread: one SSH connection, its forwards and the relay.
    def run
      hostname, user, options = @ssh
      Net::SSH.start(hostname, user, options) do |ssh|
        remote = forward(ssh)
        next if remote.nil?

        pass_forwarded_connections(ssh, remote.invert)
        channel = relay_channel(ssh, remote)
        ssh.loop(0.1) { !stopping? && channel.active? }
        settle(:ended, "murder relay ended") unless stopping?
        channel.eof! if channel.active?
        channel.close if channel.active?
        deadline = clock + 5
        ssh.loop(0.1) { channel.active? && clock < deadline }
      end
    rescue StandardError, ::Net::SSH::Exception => e
      settle(:ended, "#{e.class}: #{e.message}".lines.first.strip)
    ensure
      settle(:ended, "its SSH connection closed")
    end

    # Remote forwards, one per port: a port sshd picks on the server's
    # loopback, on to the same port here. Returns {port => remote port},
    # or nil when sshd refused one.
    def forward(ssh)
      remote = {}
      refused = nil
      @ports.each do |port|
        ssh.forward.remote(port, "127.0.0.1", 0, "127.0.0.1") do |assigned, _bind|
          if assigned == :error
            refused = "sshd refused a remote forward (AllowTcpForwarding?) for port #{port}"
            next :no_exception
          end
          remote[port] = assigned
        end
      end
      ssh.loop(0.1) { refused.nil? && remote.size < @ports.size && !stopping? }
      return remote if refused.nil? && remote.size == @ports.size

      settle(:ended, refused || "stopped")
      nil
    end

    # Connections the server's sshd forwards (`forwarded-tcpip`), each to
    # this machine's port it names; in place of net-ssh's own handler,
    # which reads 8 KiB a turn and, in some versions, prints each
    # connection on standard output.
    #
    # @param targets [Hash{Integer => Integer}] by the server's forwarded
    #   port, the port here
    def pass_forwarded_connections(ssh, targets)
      ssh.on_open_channel("forwarded-tcpip") do |session, channel, packet|
        packet.read_string # the address sshd listens on
        port = targets[packet.read_long]
        raise ::Net::SSH::ChannelOpenFailed.new(1, "no such forward") if port.nil?

        begin
          pass(session, channel, TCPSocket.new("127.0.0.1", port))
        rescue SystemCallError => e
          raise ::Net::SSH::ChannelOpenFailed.new(2, "127.0.0.1:#{port}: #{e.message}")
        end
      end
    end

    # One forwarded connection, both ways, until either side closes it.
    def pass(session, channel, socket)
      socket.extend(::Net::SSH::BufferedIo, ::Net::SSH::ForwardedBufferedIo)
      socket.extend(LargeReads)
      session.listen_to(socket)
      listening = true
      channel.on_data { |_, data| socket.enqueue(data) }
      channel.on_eof do
        socket.send_pending
        socket.shutdown(Socket::SHUT_WR)
      rescue IOError, SystemCallError
        nil
      end
      channel.on_close do
        session.stop_listening_to(socket)
        socket.close unless socket.closed?
      end
      channel.on_process do
        if socket.closed?
          channel.close
          next
        end
        channel.send_data(socket.read_available(CHUNK)) if socket.available.positive?
        # Backpressure: stop reading the socket while the SSH window holds
        # the channel's output back.
        backlog = channel.output.length > BACKLOG
        if backlog && listening
          session.stop_listening_to(socket)
        elsif !backlog && !listening
          session.listen_to(socket)
        end
        listening = !backlog
        # The loop writes only to sockets it listens to.
        socket.send_pending if !listening && socket.pending_write?
      end
    end

    # `murder relay` on the server, its ports on to the forwards.
    def relay_channel(ssh, remote)
      forwards = @ports.flat_map { |port| ["--forward", "#{port}=127.0.0.1:#{remote.fetch(port)}"] }
      words = ["sh", "-c", SCRIPT, "murder-relay", @murder, @sha256, *forwards, "--while-stdin-open"]
      out = +""
      err = +""
      ssh.open_channel do |channel|
        channel.exec(words.map(&:shellescape).join(" ")) do |_, ok|
          settle(:ended, "the server refused to run murder relay") unless ok
        end
        channel.on_data do |_, data|
          out << data
          settle(:ready) if out.include?("murder relay: ready")
        end
        channel.on_extended_data { |_, _, data| err << data }
        channel.on_request("exit-status") do |_, data|
          status = data.read_long
          @outdated = ::Murder::Remote.outdated(err) if status == ::Murder::Remote::OUTDATED
          settle(:ended, err.strip.lines.last&.strip || "murder relay exited with status #{status}")
        end
      end
    end
  end
end
