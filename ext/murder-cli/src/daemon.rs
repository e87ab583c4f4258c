//! Running detached with a pidfile, and stopping by pidfile: what Murder did
//! with `screen` and `pkill -f`, without their failure modes. A pidfile
//! holds the pid and the process's start time, so a stop never signals an
//! unrelated process that reused the pid, and a stop with nothing running
//! succeeds quietly.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The start time of a live process in clock ticks since boot
/// (/proc/PID/stat, field 22): with the pid, it names one process for good.
/// `None` for a process that is gone or a zombie.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields follow its ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// The process a pidfile's text names while it lives: its pid, when the
/// start time recorded beside it is that process's (0: not recorded, any).
fn recorded_process(text: &str) -> Option<i32> {
    let mut fields = text.split_whitespace();
    let pid: i32 = fields.next()?.parse().ok().filter(|&p| p > 1)?;
    let started: u64 = fields.next()?.parse().ok()?;
    start_time(pid)
        .is_some_and(|t| t == started || started == 0)
        .then_some(pid)
}

/// How long an earlier process holding a pidfile gets to stop before this
/// one takes the pidfile over.
const TAKE_OVER_GRACE: Duration = Duration::from_secs(10);

/// A pidfile that this process wrote and removes when dropped.
pub struct Pidfile {
    path: PathBuf,
    contents: String,
}

impl Pidfile {
    /// Stops an earlier process that still holds `path`, as `murder stop`
    /// would (`write` does this too; a tracker does it before it binds,
    /// since the earlier one holds its port).
    pub fn take_over(path: &Path) -> Result<(), String> {
        let own = std::process::id() as i32;
        let earlier = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| recorded_process(&text))
            .filter(|&pid| pid != own);
        if let Some(pid) = earlier {
            eprintln!(
                "murder: stopping pid {pid}, which holds {} (one process per pidfile)",
                path.display()
            );
            stop(path, TAKE_OVER_GRACE)?;
        }
        Ok(())
    }

    /// Writes this process's pidfile. An earlier process that still holds
    /// it is stopped first, as `murder stop` would: one process per
    /// pidfile, so that `murder stop` never leaves one running unseen.
    pub fn write(path: &Path) -> Result<Pidfile, String> {
        Pidfile::take_over(path)?;
        let pid = std::process::id() as i32;
        let contents = format!("{pid} {}\n", start_time(pid).unwrap_or(0));
        murder_core::fsutil::write_atomically(path, contents.as_bytes())
            .map_err(|e| e.to_string())?;
        Ok(Pidfile {
            path: path.to_path_buf(),
            contents,
        })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // Only our own: a newer daemon may have replaced it.
        if std::fs::read_to_string(&self.path).ok().as_deref() == Some(&self.contents) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What the detached child tells the parent waiting in the foreground.
pub struct Ready(Option<File>);

impl Ready {
    /// The foreground process prints `message` and exits 0.
    pub fn ok(mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(format!("ok {message}").as_bytes());
        }
    }

    /// The background process could not start: the foreground process
    /// prints `message` as its error and exits 1.
    pub fn fail(mut self, message: &str) {
        if let Some(mut pipe) = self.0.take() {
            let _ = pipe.write_all(format!("err {message}").as_bytes());
        }
    }

    /// Passes `result` on; an error also goes to the foreground process,
    /// which prints it (a detached process's own stderr is its log, or
    /// nowhere).
    pub fn failing<T, E: std::fmt::Display>(&mut self, result: Result<T, E>) -> Result<T, E> {
        if let Err(e) = &result {
            if let Some(mut pipe) = self.0.take() {
                let _ = pipe.write_all(format!("err {e}").as_bytes());
            }
        }
        result
    }

    /// Not detached: print the message here.
    pub fn foreground() -> Ready {
        Ready(None)
    }

    /// Tells the foreground process (if any) that all is well; it prints
    /// `message` there. Without detaching, prints it here.
    pub fn report(self, message: &str) {
        if self.0.is_some() {
            self.ok(message)
        } else {
            crate::print_line(message);
        }
    }
}

/// What `fork_with_pipe` returns on each side.
enum Fork {
    /// In the child: the pipe's write end, to tell the parent how it went.
    Child(File),
    /// In the parent: the child's pid and the pipe's read end.
    Parent {
        child: libc::pid_t,
        from_child: File,
    },
}

/// Forks with a pipe from the child to the parent. Call before starting any
/// threads (a forked child has only the thread that forked).
fn fork_with_pipe() -> Result<Fork, String> {
    let mut fds = [0; 2];
    // SAFETY: plain syscalls on descriptors we own; no other thread runs.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        let (read_end, write_end) = (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]));
        match libc::fork() {
            -1 => Err(format!("fork: {}", std::io::Error::last_os_error())),
            0 => Ok(Fork::Child(File::from(write_end))),
            child => Ok(Fork::Parent {
                child,
                from_child: File::from(read_end),
            }),
        }
    }
}

/// Leaves the terminal: a session of its own, stdin from /dev/null, stdout
/// and stderr to `log` (or /dev/null), so an SSH session that started this
/// process can close.
fn detach_stdio(log: Option<&Path>) -> Result<(), String> {
    let target = match log {
        Some(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?,
        None => File::options()
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("/dev/null: {e}"))?,
    };
    let null_in = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: setsid and dup2 on descriptors we hold open.
    unsafe {
        libc::setsid();
        libc::dup2(null_in.as_raw_fd(), 0);
        libc::dup2(target.as_raw_fd(), 1);
        libc::dup2(target.as_raw_fd(), 2);
    }
    Ok(())
}

fn read_all(mut pipe: File) -> String {
    let mut message = String::new();
    let _ = pipe.read_to_string(&mut message);
    message
}

/// Forks into the background. Returns in the child, which runs on with no
/// terminal, stdio on `log` (or /dev/null), in its own session. The parent
/// waits until the child calls `Ready::ok` (and exits 0 printing its
/// message), `Ready::fail` (and returns that error) or dies (and returns an
/// error). Call before starting any threads.
pub fn detach(log: Option<&Path>) -> Result<Ready, String> {
    match fork_with_pipe()? {
        Fork::Child(to_parent) => {
            detach_stdio(log)?;
            Ok(Ready(Some(to_parent)))
        }
        Fork::Parent { child, from_child } => {
            let message = read_all(from_child);
            if let Some(text) = message.strip_prefix("err ") {
                return Err(text.to_string());
            }
            if let Some(text) = message.strip_prefix("ok ") {
                if !text.is_empty() {
                    crate::print_line(text);
                }
                std::process::exit(0);
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let hint = log.map_or(String::new(), |p| format!(" (see {})", p.display()));
            Err(format!("the background process failed to start{hint}"))
        }
    }
}

/// Stops the process named by `pidfile`: SIGTERM, then SIGKILL after
/// `grace`. Succeeds when nothing runs (removing a stale pidfile); fails,
/// keeping the pidfile, when the process cannot be signalled (another
/// user's) or outlives SIGKILL.
pub fn stop(pidfile: &Path, grace: Duration) -> Result<&'static str, String> {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok("not running"),
        Err(e) => return Err(format!("{}: {e}", pidfile.display())),
    };
    let alive = || recorded_process(&text).is_some();
    let signal = |pid: i32, sig: libc::c_int| {
        // SAFETY: kill(2) on the pid the pidfile's live process has.
        if unsafe { libc::kill(pid, sig) } == 0 {
            Ok(())
        } else {
            let e = std::io::Error::last_os_error();
            Err(format!("pid {pid} (from {}): {e}", pidfile.display()))
        }
    };
    let outcome = match recorded_process(&text) {
        Some(pid) => {
            signal(pid, libc::SIGTERM)?;
            let deadline = Instant::now() + grace;
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive() {
                signal(pid, libc::SIGKILL)?;
                while alive() && Instant::now() < deadline + Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if alive() {
                    // The pidfile stays: it still names a live process.
                    return Err(format!(
                        "pid {pid} (from {}) is still running after SIGKILL",
                        pidfile.display()
                    ));
                }
                "killed"
            } else {
                "stopped"
            }
        }
        None => "not running (stale pidfile removed)",
    };
    // Only what we read: a newer process may have taken the pidfile over
    // while we waited, and it must not run unseen.
    if std::fs::read_to_string(pidfile).ok().as_deref() != Some(text.as_str()) {
        return Ok(outcome);
    }
    match std::fs::remove_file(pidfile) {
        Ok(()) => Ok(outcome),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(outcome),
        Err(e) => Err(format!("{}: {e}", pidfile.display())),
    }
}

/// The child's side of `fork_until_done`: tells the waiting foreground
/// process that the work is done, then leaves the terminal.
pub struct Handoff(Option<File>);

impl Handoff {
    pub fn none() -> Handoff {
        Handoff(None)
    }

    /// The foreground process exits 0; this process goes on in its own
    /// session with stdio on `log` (or /dev/null).
    pub fn release(mut self, log: Option<&Path>) {
        let Some(mut pipe) = self.0.take() else {
            return;
        };
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let _ = pipe.write_all(b"ok");
        drop(pipe);
        if let Err(e) = detach_stdio(log) {
            tracing::warn!("cannot detach: {e}");
        }
    }
}

/// The child that `fork_until_done`'s waiting parent passes signals to.
static WORKER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_to_worker(signal: libc::c_int) {
    let worker = WORKER.load(std::sync::atomic::Ordering::SeqCst);
    if worker > 0 {
        // SAFETY: kill(2) is async-signal-safe; the pid is our own child's.
        unsafe { libc::kill(worker, signal) };
    }
}

/// Forks; the child returns and does the work on the terminal (Ctrl-C still
/// reaches it), the parent waits. When the child calls `Handoff::release`
/// the parent exits 0 and the child carries on in the background; if the
/// child exits first, the parent exits with its status. Call before
/// starting any threads.
pub fn fork_until_done() -> Result<Handoff, String> {
    match fork_with_pipe()? {
        Fork::Child(to_parent) => Ok(Handoff(Some(to_parent))),
        Fork::Parent { child, from_child } => {
            // SAFETY: ignoring SIGINT here; the child (same process group)
            // gets Ctrl-C and the parent only waits for its word or exit.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
            // A SIGTERM or SIGHUP to this pid alone (a tool ending the
            // process it started) is the child's: passed on, it stops the
            // work, and the parent exits with the child's status.
            WORKER.store(child, std::sync::atomic::Ordering::SeqCst);
            let forward = forward_to_worker as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // SAFETY: the handler only calls kill(2), which is
            // async-signal-safe, on the pid stored before it is installed.
            unsafe {
                libc::signal(libc::SIGTERM, forward);
                libc::signal(libc::SIGHUP, forward);
            }
            if read_all(from_child) == "ok" {
                std::process::exit(0);
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(child, &mut status, 0) };
            if libc::WIFSIGNALED(status) {
                // Killed (the OOM killer, an operator): it could not say
                // so itself. Said here, with the shell's status for it.
                let signal = libc::WTERMSIG(status);
                eprintln!(
                    "murder: killed by signal {signal} ({})",
                    signal_name(signal)
                );
                std::process::exit(128 + signal);
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                1
            };
            std::process::exit(if code == 0 { 1 } else { code })
        }
    }
}

/// The C library's description of `signal` ("Killed" for SIGKILL).
fn signal_name(signal: libc::c_int) -> String {
    // SAFETY: strsignal returns a string it owns (or NULL), read at once.
    let text = unsafe { libc::strsignal(signal) };
    if text.is_null() {
        return format!("signal {signal}");
    }
    // SAFETY: a NUL-terminated string from strsignal.
    unsafe { std::ffi::CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}
