//! Long work runs on a native thread while the calling Ruby thread waits
//! without the GVL, so other Ruby threads run meanwhile. Every tick (and
//! whenever Ruby interrupts the wait) the caller takes the GVL back, checks
//! for interrupts (Ctrl-C, Thread#raise) and reports progress; an interrupt
//! cancels the work (through its `Progress`), waits for it to stop with the
//! GVL released again, and raises in Ruby then. A panic in the work is caught on its thread and raised
//! in Ruby as an error (wasmtime-rb's `nogvl` does the same), never left to
//! unwind through Ruby's frames or to leave the caller waiting. The work
//! holds no Ruby object and takes no lock that Ruby code could hold.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use magnus::{Error, Ruby};
use murder_core::Progress;

const TICK: Duration = Duration::from_millis(100);

enum Event<R> {
    Done(R),
    Panicked(String),
    Wake,
}

/// Runs `work` off the GVL; `tick` runs with the GVL held about every 100 ms
/// and once at the end.
pub fn run<R, W, T>(ruby: &Ruby, progress: &Progress, work: W, mut tick: T) -> Result<R, Error>
where
    R: Send,
    W: FnOnce() -> R + Send,
    T: FnMut() -> Result<(), Error>,
{
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<Event<R>>();
        let done = tx.clone();
        scope.spawn(move || {
            let event = match catch_unwind(AssertUnwindSafe(work)) {
                Ok(r) => Event::Done(r),
                Err(panic) => Event::Panicked(panic_message(&*panic)),
            };
            let _ = done.send(event);
        });
        loop {
            let result = match without_gvl(|| rx.recv_timeout(TICK), &tx) {
                Some(Ok(Event::Done(r))) => Some(r),
                Some(Ok(Event::Panicked(message))) => {
                    return Err(Error::new(
                        ruby.exception_runtime_error(),
                        format!("murder: internal error (a native thread panicked: {message})"),
                    ))
                }
                // Woken, timed out, or an interrupt was pending before the
                // wait. (`tx` lives here, so the channel never disconnects.)
                None | Some(Ok(Event::Wake)) | Some(Err(_)) => None,
            };
            if let Err(e) = ruby.thread_check_ints().and_then(|_| tick()) {
                // Work that ended already (its end taken off the channel
                // above) has nothing left to cancel or wait for.
                if result.is_none() {
                    progress.cancel();
                    return Err(finish_without_gvl(ruby, &rx, &tx, e));
                }
                return Err(e);
            }
            if let Some(r) = result {
                return Ok(r);
            }
        }
    })
}

/// Waits, with the GVL released, for a cancelled worker to end (work that
/// cannot see the cancel, joining a session's threads say, takes seconds,
/// and other Ruby threads must run meanwhile), then gives back the error to
/// raise: `first`, or a later interrupt that is a jump (Thread#kill, a
/// throw), which must not be lost. Ruby releases the GVL to no one while an
/// interrupt is pending, so a further exception is taken at once (through
/// `thread_check_ints`, which catches what it raises) and only cuts the
/// wait short. Once the error is a jump, nothing more is taken: taking
/// another would make magnus restore a jump's `$!`, which raises outside
/// any protection; the wait then goes on in short turns with the GVL.
fn finish_without_gvl<R>(
    ruby: &Ruby,
    rx: &mpsc::Receiver<Event<R>>,
    tx: &Sender<Event<R>>,
    first: Error,
) -> Error {
    let mut raised = first;
    loop {
        match without_gvl(|| rx.recv_timeout(TICK), tx) {
            Some(Ok(Event::Done(_) | Event::Panicked(_))) => return raised,
            Some(_) => {}
            // Skipped: another interrupt is pending.
            None => {
                let taken = if raised.value().is_some() {
                    ruby.thread_check_ints().err()
                } else {
                    None
                };
                match taken {
                    Some(later) => {
                        if later.value().is_none() {
                            raised = later;
                        }
                    }
                    // Nothing taken (after a jump, or masked): wait a
                    // little with the GVL rather than spin.
                    None => {
                        if let Ok(Event::Done(_) | Event::Panicked(_)) =
                            rx.recv_timeout(Duration::from_millis(10))
                        {
                            return raised;
                        }
                    }
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Calls `f` with the GVL released; Ruby's unblock function wakes the wait.
/// `None` when an interrupt was already pending and Ruby skipped the call.
/// The `2` variant never raises itself (a raise would unwind through Rust
/// frames with longjmp); interrupts are checked by the caller instead.
fn without_gvl<F, T, R>(f: F, wake: &Sender<Event<R>>) -> Option<T>
where
    F: FnOnce() -> T,
{
    struct Call<F, T> {
        f: Option<F>,
        out: Option<T>,
    }
    unsafe extern "C" fn call<F: FnOnce() -> T, T>(data: *mut c_void) -> *mut c_void {
        // SAFETY: `data` is the `Call` below, alive for the whole call.
        let call = unsafe { &mut *(data as *mut Call<F, T>) };
        if let Some(f) = call.f.take() {
            call.out = Some(f());
        }
        std::ptr::null_mut()
    }
    unsafe extern "C" fn unblock<R>(data: *mut c_void) {
        // SAFETY: `data` is the sender borrowed below, alive for the whole call.
        let wake = unsafe { &*(data as *const Sender<Event<R>>) };
        let _ = wake.send(Event::Wake);
    }
    let mut state = Call {
        f: Some(f),
        out: None,
    };
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(call::<F, T>),
            &mut state as *mut Call<F, T> as *mut c_void,
            Some(unblock::<R>),
            wake as *const Sender<Event<R>> as *mut c_void,
        );
    }
    state.out
}
