//! A session on its own thread and runtime, for callers that are not async
//! (Ruby, the CLI's simple paths, tests).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Role, Session, SessionConfig, State, Stats};
use crate::error::{Error, Result};
use crate::metainfo::Metainfo;

pub struct SessionRunner {
    state: tokio::sync::watch::Receiver<State>,
    local_addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    shared: Arc<super::Shared>,
}

impl SessionRunner {
    /// Starts the session (checking data first) and returns once it serves.
    pub fn start(meta: Arc<Metainfo>, role: Role, config: SessionConfig) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let session = runtime.block_on(Session::start(meta, role, config))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let state = session.state();
        let local_addr = session.local_addr();
        let shared = session.shared.clone();
        let thread = std::thread::Builder::new()
            .name("murder-session".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let _ = stopped.await;
                    session.shutdown().await;
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::io("session thread", e))?;
        Ok(SessionRunner {
            state,
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
            shared,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    pub fn state(&self) -> State {
        self.state.borrow().clone()
    }

    /// Waits up to `timeout` while the session is still downloading.
    pub fn wait_done(&self, timeout: Duration) -> State {
        let deadline = std::time::Instant::now() + timeout;
        while self.state() == State::Downloading && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.state()
    }

    /// Announces `stopped`, closes connections, ends the thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SessionRunner {
    fn drop(&mut self) {
        self.stop();
    }
}
