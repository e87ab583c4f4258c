//! The end of a download: every piece verified, the data synced and renamed
//! to its destination, then the state `Complete` (rule P4 of STATE.md: in
//! this order, once). Runs on the session's tracker, so shutdown waits for
//! a rename under way and none starts after it. With `place: false` the
//! data is only staged (synced where it is) and `Session::place` renames it
//! later, when the caller says so (a deploy that places every host's
//! release only once all of them hold it).

use std::sync::Arc;
use std::time::Instant;

use super::context::{Context, Event};
use super::State;
use crate::error::Error;

pub(super) async fn finish(ctx: Arc<Context>) {
    let Some(dest) = ctx.dest.clone() else {
        return;
    };
    if !ctx.is_downloading() {
        return;
    }
    ctx.mark(|t| t.verified = Some(Instant::now()));
    let storage = ctx.storage.clone();
    let place = ctx.config.place;
    let cancel = ctx.cancel.clone();
    let placed = ctx
        .tasks
        .spawn_blocking(move || {
            storage.stage()?;
            // Rule S1: the sync may outlast shutdown's grace; a shutdown
            // that came meanwhile leaves the data staged, never renamed
            // after it returned.
            if !place {
                Ok(())
            } else if cancel.is_cancelled() {
                Err(Error::Cancelled)
            } else {
                storage.rename_to(&dest)
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))
        .and_then(|r| r);
    match placed {
        Ok(()) => {
            ctx.mark(|t| t.placed = Some(Instant::now()));
            ctx.state.send_if_modified(|s| {
                let changed = *s == State::Downloading;
                if changed {
                    *s = State::Complete;
                }
                changed
            });
            let _ = ctx.events.send(Event::Complete);
        }
        Err(e) => ctx.fail(&e),
    }
}
