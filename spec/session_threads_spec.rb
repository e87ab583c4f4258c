# frozen_string_literal: true

# Sessions used from several Ruby threads, the way a deploy tool does: one
# thread downloads while another reads progress or stops it, and Ctrl-C
# (an interrupt) arrives while native work runs without the GVL. Each case
# runs in a child process with a deadline, so a deadlock fails the example
# instead of hanging the suite.
RSpec.describe "Murder sessions and Ruby threads" do
  # The end of a child script: `worker` (a Thread that returns
  # :interrupted on Interrupt) is interrupted half a second in, and the
  # child prints what it returned and how long that took.
  INTERRUPT_WORKER = <<~'RUBY'
    sleep 0.5
    raised = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    worker.raise(Interrupt)
    result = worker.join(10)&.value
    took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - raised
    puts format("%s after %.2f s", result.inspect, took)
  RUBY

  # The child ran INTERRUPT_WORKER, and the worker stopped on the interrupt
  # within a second.
  def expect_interrupted_within_a_second(out, status)
    expect(status).to be_success, out
    result, took = out.match(/(\S+) after ([\d.]+) s/)&.captures
    expect(result).to eq(":interrupted"), out
    expect(took.to_f).to be < 1.0
  end

  # A seed's release whose tracker accepts and never answers, so that a
  # stop waits on its "stopped" announce: yields the .torrent's path and
  # the data's, and returns what the block returns.
  def with_a_slow_stop
    data = sample_file("release.tgz", bytes: 100_000)
    silent = TCPServer.new("127.0.0.1", 0)
    torrent = File.join(tmpdir, "release.torrent")
    Murder::Torrent.create(data, tracker: "127.0.0.1:#{silent.addr[1]}").write(torrent)
    yield torrent, data
  ensure
    silent&.close
  end

  # Runs `script` in a child (ruby_child) in which `seeder` seeds a release
  # whose stop is slow (with_a_slow_stop), started 0.3 s before.
  def with_a_slowly_stopping_seeder(script)
    with_a_slow_stop do |torrent, data|
      ruby_child(<<~'RUBY' + script, torrent, data, deadline: 20)
        require "murder"
        seeder = Murder::Seeder.new(Murder::Torrent.load(ARGV[0]), ARGV[1], lazy_check: true).start
        sleep 0.3
      RUBY
    end
  end

  def ruby_child(script, *args, deadline: 30)
    out, status = Open3.capture2e("timeout", "-s", "KILL", deadline.to_s, RbConfig.ruby, "-I", File.join(ROOT, "lib"),
                                  "-e", script, *args.map(&:to_s))
    [out, status]
  end

  it "answers stats and stop from another thread while Download#run waits" do
    data = sample_file("release.tgz", bytes: 2_000_000)
    torrent = Murder::Torrent.create(data, tracker: "127.0.0.1:9")
    torrent.write(File.join(tmpdir, "release.torrent"))
    out, status = ruby_child(<<~'RUBY', File.join(tmpdir, "release.torrent"), File.join(tmpdir, "out/release.tgz"))
      require "murder"
      download = Murder::Download.new(Murder::Torrent.load(ARGV[0]), ARGV[1])  # no seed anywhere: it waits
      runner = Thread.new { download.run(timeout: 60) rescue $! }
      sleep 1.5
      stats = download.stats
      puts "stats #{stats['total_bytes']}"
      download.stop
      puts "stopped"
      puts runner.join(5) ? "run returned #{runner.value.class}" : "run did not return"
    RUBY
    expect(status).to be_success, out
    expect(out).to include("stats 2000000", "stopped", "run returned Murder::Cancelled")
    expect(File.exist?(File.join(tmpdir, "out/release.tgz"))).to be(false)
  end

  it "stops Seeder#start on an interrupt within a second while it verifies a large file" do
    big = File.join(tmpdir, "big.bin")
    File.open(big, "w") { |f| f.truncate(8 << 30) } # sparse: reads cost no disk
    murder("make-torrent", big, "--tracker", "127.0.0.1:9", "-o", "#{big}.torrent", "-q")
    out, status = ruby_child(<<~'RUBY' + INTERRUPT_WORKER, "#{big}.torrent", big)
      require "murder"
      torrent = Murder::Torrent.load(ARGV[0])
      worker = Thread.new do
        Murder::Seeder.new(torrent, ARGV[1]).start
        :verified
      rescue Interrupt
        :interrupted
      end
    RUBY
    expect_interrupted_within_a_second(out, status)
  end

  # nogvl: an interrupt cancelled the work but then joined it with the GVL
  # held, and a session's wait did not look at the cancel: Thread#raise
  # into a wait(30) froze every Ruby thread for the rest of the 30 s.
  it "returns from a long native wait at once on an interrupt" do
    data = sample_file("release.tgz", bytes: 1_000_000)
    paths = [File.join(tmpdir, "release.torrent"), File.join(tmpdir, "out/release.tgz")]
    Murder::Torrent.create(data, tracker: "127.0.0.1:9").write(paths.first)
    out, status = ruby_child(<<~'RUBY' + INTERRUPT_WORKER, *paths)
      require "murder"
      download = Murder::Download.new(Murder::Torrent.load(ARGV[0]), ARGV[1]) # no seed anywhere: it waits
      native = download.send(:start_native, false)
      worker = Thread.new do
        native.wait(30)
        :returned
      rescue Interrupt
        :interrupted
      end
      at_exit { download.stop }
    RUBY
    expect_interrupted_within_a_second(out, status)
  end

  # nogvl: a progress block that raised on its last call (the work already
  # done) cancelled the finished work and then waited for it to end: the
  # end had been taken off the channel already, so it waited forever.
  it "raises what the progress block raised when the work ended before it" do
    one = sample_file("one", bytes: 1)
    out, status = ruby_child(<<~'RUBY', one, deadline: 10)
      require "murder"
      begin
        Murder::Torrent.create(ARGV[0], tracker: "127.0.0.1:9") { raise ArgumentError, "from the block" }
        puts "returned"
      rescue ArgumentError => e
        puts "raised #{e.message}"
      end
    RUBY
    expect(out).to include("raised from the block")
    expect(status).to be_success, out
  end

  # An interrupt during a slow stop (its "stopped" announce to a tracker
  # that never answers) raised before the session was forgotten: the seeder
  # then said "already started" to #start and "cancelled" to #stats forever.
  it "forgets a stopped session even when an interrupt ends the stop" do
    out, status = with_a_slowly_stopping_seeder(<<~'RUBY')
      stopper = Thread.new { seeder.stop }
      stopper.report_on_exception = false
      sleep 0.3
      stopper.raise(Interrupt)
      begin
        stopper.join
      rescue Interrupt
        puts "stop interrupted"
      end
      begin
        seeder.stats
      rescue Murder::Error => e
        puts "stats: #{e.class}"
      end
      seeder.start
      puts "started again"
      seeder.stop
    RUBY
    expect(out).to include("stop interrupted", "stats: Murder::InvalidArgument", "started again")
    expect(status).to be_success, out
  end

  # While a stop in another thread is under way (its "stopped" announce to
  # a tracker that never answers), #stats and #port raised
  # Murder::Cancelled, where the docs promise InvalidArgument once stopped.
  it "answers stats and port during a stop in another thread as a stopped session" do
    out, status = with_a_slowly_stopping_seeder(<<~'RUBY')
      stopper = Thread.new { seeder.stop }
      sleep 0.3
      puts "stop under way" if stopper.alive?
      %i[stats port].each do |call|
        seeder.public_send(call)
        puts "#{call}: answered"
      rescue Murder::Error => e
        puts "#{call}: #{e.class}: #{e.message}"
      end
      stopper.join
    RUBY
    expect(status).to be_success, out
    expect(out).to include("stop under way", "stats: Murder::InvalidArgument: seeder stopped",
                           "port: Murder::InvalidArgument: seeder stopped")
  end

  # A second stop while the first is under way returned at once, before the
  # session had ended (its "stopped" announce still waiting), where the
  # docs promise a return once the session's threads have ended.
  it "returns from a second stop only once the session has ended" do
    out, status = with_a_slow_stop do |torrent, data|
      ruby_child(<<~'RUBY', torrent, data, deadline: 20)
        require "murder"
        require "socket"
        seeder = Murder::Seeder.new(Murder::Torrent.load(ARGV[0]), ARGV[1], lazy_check: true, bind: "127.0.0.1").start
        port = seeder.port
        sleep 0.3
        first = Thread.new { seeder.stop }
        sleep 0.3
        seeder.stop
        puts first.join(0.5) ? "first stop done" : "first stop still under way"
        begin
          TCPServer.new("127.0.0.1", port).close
          puts "port free"
        rescue Errno::EADDRINUSE
          puts "port still held"
        end
        first.join
      RUBY
    end
    expect(status).to be_success, out
    expect(out).to include("first stop done", "port free")
  end

  # nogvl: while a cancelled stop finished, a second interrupt stayed
  # pending, and Ruby releases the GVL to no one then: the waiting thread
  # held it in 10 ms waits until the stop ended, and every other Ruby
  # thread stood still.
  it "lets other Ruby threads run while a stop interrupted twice finishes" do
    out, status = with_a_slowly_stopping_seeder(<<~'RUBY')
      ticks = 0
      Thread.new { loop { sleep 0.01; ticks += 1 } }
      stopper = Thread.new { seeder.stop }
      stopper.report_on_exception = false
      sleep 0.2
      before = ticks
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      stopper.raise(Interrupt)
      sleep 0.05
      stopper.raise(Interrupt)
      begin
        stopper.join
      rescue Interrupt
        nil
      end
      took = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      puts format("ticks %d in %.2f s", ticks - before, took)
    RUBY
    expect(status).to be_success, out
    ticks, took = out.match(/ticks (\d+) in ([\d.]+) s/)&.captures
    expect(took.to_f).to be > 0.5, out # the stop was still under way
    expect(ticks.to_i).to be >= (took.to_f * 20), out # at 100 a second when free
  end
end
