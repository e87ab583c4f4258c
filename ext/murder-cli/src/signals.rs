//! One place that decides when a long-running command should end.

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on SIGTERM (`murder stop`), SIGINT (Ctrl-C) or SIGHUP.
pub async fn terminated() {
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = streams else {
        // Registering a handler fails only without a runtime's signal driver.
        tracing::warn!("cannot watch signals; stopping only on Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
}
