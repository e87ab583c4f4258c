//! A session on its own thread and runtime, for callers that are not async
//! (Ruby, the CLI's simple paths, tests). Every method takes `&self`, so a
//! runner can be shared between threads: one waits while another reads
//! stats or stops it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::context::Context;
use super::{Role, Session, SessionConfig, State, Stats};
use crate::error::{Error, Result};
use crate::metainfo::Metainfo;
use crate::progress::Progress;

pub struct SessionRunner {
    state: tokio::sync::watch::Receiver<State>,
    local_addr: std::net::SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    ctx: Arc<Context>,
}

impl SessionRunner {
    /// Starts the session (checking data first) and returns once it serves.
    pub fn start(meta: Arc<Metainfo>, role: Role, config: SessionConfig) -> Result<Self> {
        SessionRunner::start_with(meta, role, config, Arc::new(Progress::new()))
    }

    /// `start`, with `progress` to follow (and cancel) the check of the
    /// data that comes first.
    pub fn start_with(
        meta: Arc<Metainfo>,
        role: Role,
        config: SessionConfig,
        progress: Arc<Progress>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let session = runtime.block_on(Session::start_with(meta, role, config, progress))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = session.state();
        let local_addr = session.local_addr();
        let ctx = session.ctx.clone();
        let thread = std::thread::Builder::new()
            .name("murder-session".into())
            .spawn(move || {
                runtime.block_on(async move {
                    // A failed session (a seed whose data no longer reads
                    // back) is ended as if stopped: it serves nothing.
                    tokio::select! {
                        _ = stopped => {}
                        _ = super::failure(session.state()) => {}
                    }
                    session.shutdown().await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::io("session thread", e))?;
        Ok(SessionRunner {
            state,
            local_addr,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
            ctx,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Stats {
        self.ctx.stats()
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        self.stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Waits up to `timeout` while the session is still downloading and
    /// running; returns the state then.
    pub fn wait_done(&self, timeout: Duration) -> State {
        self.wait_done_unless(timeout, &Progress::new())
    }

    /// `wait_done`, returning early once `cancel` is cancelled (a Ruby
    /// interrupt: the caller must not sit out the whole timeout).
    pub fn wait_done_unless(&self, timeout: Duration, cancel: &Progress) -> State {
        let deadline = std::time::Instant::now() + timeout;
        while self.state() == State::Downloading
            && !self.is_stopped()
            && !cancel.is_cancelled()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.state()
    }

    /// Asks the session to stop without waiting for it (it announces
    /// `stopped` and ends on its own thread within seconds).
    pub fn request_stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = stop.send(());
        }
    }

    /// Announces `stopped`, closes connections, and ends the thread: every
    /// task of the session has ended when this returns.
    pub fn stop(&self) {
        self.request_stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Drop for SessionRunner {
    /// Stops without waiting: a runner dropped by a garbage collector must
    /// not hold it for seconds. Call `stop` to wait.
    fn drop(&mut self) {
        self.request_stop();
    }
}
