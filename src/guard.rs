//! Panic boundaries: a panic becomes an error for the file being worked on.
//!
//! Two kinds of code run behind a boundary:
//!
//! - third-party code ([`third_party`]: tract's model import, optimisation and
//!   run; the image decoders). Fuzzing found inputs on which tract panics
//!   instead of returning an error (e.g. a pooling node whose attributes have
//!   another rank than its input panics with an index out of bounds in tract's
//!   padding computation). Such a model or image gives a one-line error.
//! - this crate's own work on one image or one model ([`boundary`]): a bug
//!   of ours (a kernel indexing out of range, say) must fail that image (exit
//!   1, the batch goes on) or that model (exit 2), not abort the process with
//!   exit code 101 and a raw panic message.
//!
//! rayon re-raises a worker's panic on the thread that called the parallel
//! operation, so one `catch_unwind` at the boundary also covers the worker
//! threads of a `par_iter` under it. While any boundary is active (on any
//! thread), the panic hook installed by [`install_hook`] records each panic's
//! message and location instead of printing them, and the boundary that
//! catches the panic puts them in its error. Without the hook (a library user
//! who did not install it) panics are still caught, but the default hook
//! prints them and the error has no location.

use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

use anyhow::{anyhow, Result};

/// Boundaries active on all threads.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Recent panics seen by the hook while a boundary was active: message and
/// `message at file:line`, newest last.
static RECORDED: Mutex<VecDeque<(String, String)>> = Mutex::new(VecDeque::new());

/// How many recorded panics are kept (a boundary takes its own at once).
const KEEP: usize = 64;

/// The message of a panic payload.
fn payload_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown error".into())
}

/// Installs the panic hook that keeps caught panics quiet and records their
/// location (idempotent). The binary calls it first thing in `main`; other
/// panics are printed by the previous hook as usual.
pub fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) > 0 {
                let msg = payload_message(info.payload());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", short_path(l.file()), l.line()))
                    .unwrap_or_default();
                let mut r = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
                if r.len() == KEEP {
                    r.pop_front();
                }
                r.push_back((msg.clone(), format!("{msg}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// The crate-relative part of a source path (`tract-core-0.23.9/src/...`).
fn short_path(file: &str) -> &str {
    const REGISTRY: &str = "/registry/src/";
    match file.find(REGISTRY) {
        Some(i) => {
            let rest = &file[i + REGISTRY.len()..];
            rest.split_once('/').map_or(rest, |(_, r)| r)
        }
        None => file,
    }
}

/// Decrements [`ACTIVE`] when dropped (also while unwinding).
struct Active;

impl Active {
    fn enter() -> Active {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `f`; a panic in it (or in a rayon worker it waits for) becomes
/// `Err("message at file:line")`.
fn catch<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<Result<T>, String> {
    let active = Active::enter();
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    drop(active);
    r.map_err(|payload| {
        let msg = payload_message(&*payload);
        let mut rec = RECORDED.lock().unwrap_or_else(|e| e.into_inner());
        match rec.iter().rposition(|(m, _)| *m == msg) {
            Some(i) => rec.remove(i).map_or(msg, |(_, full)| full),
            None => msg,
        }
    })
}

/// Runs `f`, a call into `library` (named in the error); a panic inside it
/// becomes the error "internal error in {library} on this input (a bug of
/// {library}): {message} at {file}:{line}".
pub fn third_party<T>(library: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch(f).unwrap_or_else(|what| {
        Err(anyhow!(
            "internal error in {library} on this input (a bug of {library}): {what}"
        ))
    })
}

/// Runs `f`, this crate's work on `what` (e.g. "model vgg16.onnx" or
/// "cat.jpg"); a panic inside it, on this thread or in a rayon worker it
/// waits for, becomes the error "{what}: internal error (a bug of
/// lrp-heatmap, please report it): {message} at {file}:{line}".
pub fn boundary<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch(f).unwrap_or_else(|msg| {
        Err(anyhow!(
            "{what}: internal error (a bug of lrp-heatmap, please report it): {msg}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_values_pass_through() {
        install_hook();
        assert_eq!(third_party("lib", || Ok(3)).unwrap(), 3);
        assert!(third_party::<()>("lib", || Err(anyhow!("plain error"))).is_err());
        let e = third_party::<()>("somelib", || {
            let v: Vec<u8> = Vec::new();
            let i = v.len() + 2;
            let _x = v[i];
            Ok(())
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("internal error in somelib"), "{msg}");
        assert!(msg.contains("index out of bounds"), "{msg}");
        assert!(msg.contains("guard.rs"), "{msg}");
        assert!(!msg.contains("panicked"), "{msg}");
        // nested guards and later calls still work
        let n = third_party("outer", || third_party("inner", || Ok(1)));
        assert_eq!(n.unwrap(), 1);
    }

    #[test]
    fn a_panic_in_a_rayon_worker_becomes_the_error_of_the_boundary() {
        use rayon::prelude::*;
        install_hook();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let e = boundary("cat.jpg", || {
            pool.install(|| {
                let s: usize = (0..64usize)
                    .into_par_iter()
                    .map(|i| {
                        let v = std::hint::black_box([0u8; 27]);
                        // a slice starting past the end, as a kernel bug would
                        let start = 28 + i % 2;
                        v[start..].len()
                    })
                    .sum();
                Ok(s)
            })
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.starts_with("cat.jpg: internal error"), "{msg}");
        assert!(msg.contains("out of range for slice of length 27"), "{msg}");
        assert!(msg.contains("guard.rs"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        // the pool survives and the boundary passes values and errors through
        let ok = boundary("x", || {
            Ok(pool.install(|| (0..10).into_par_iter().sum::<i32>()))
        });
        assert_eq!(ok.unwrap(), 45);
        let e = boundary::<()>("y", || Err(anyhow!("plain"))).unwrap_err();
        assert_eq!(format!("{e:#}"), "plain");
    }

    #[test]
    fn short_paths_of_registry_sources() {
        assert_eq!(
            short_path("/home/u/.cargo/registry/src/index.crates.io-abc/tract-core-0.23.9/src/ops/cnn/padding.rs"),
            "tract-core-0.23.9/src/ops/cnn/padding.rs"
        );
        assert_eq!(short_path("src/model.rs"), "src/model.rs");
    }
}
