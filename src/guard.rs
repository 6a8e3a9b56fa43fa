//! A boundary around third-party code (tract's model import, optimisation
//! and run; the image decoders) that turns a panic into an error.
//!
//! Fuzzing found inputs on which tract panics instead of returning an error
//! (e.g. a pooling node whose attributes have another rank than its input
//! panics with an index out of bounds in tract's padding computation). Such a
//! model or image must give a one-line error, not a crash, so the calls into
//! those libraries go through [`third_party`]. Panics in this crate's own
//! code are bugs to fix and are never caught here.
//!
//! While a guarded call runs on a thread, the panic hook records the message
//! and location instead of printing them (other panics are printed by the
//! previous hook as usual), and the error carries them. The guard is per
//! thread: a panic on a worker thread of tract's matrix products would still
//! be printed there before it reaches the guard (none was seen by fuzzing;
//! the shapes are checked long before a product runs).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use anyhow::{anyhow, Result};

thread_local! {
    /// Guarded calls active on this thread.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Message and location of the last panic caught on this thread.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) > 0 {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown error".into());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", short_path(l.file()), l.line()))
                    .unwrap_or_default();
                LAST.with(|l| *l.borrow_mut() = Some(format!("{msg}{at}")));
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

/// Runs `f`, a call into `library` (named in the error); a panic inside it
/// becomes the error "internal error in {library} on this input (a bug of
/// {library}): {message} at {file}:{line}".
pub fn third_party<T>(library: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get() - 1));
    r.unwrap_or_else(|_| {
        let what = LAST
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| "unknown error".into());
        Err(anyhow!(
            "internal error in {library} on this input (a bug of {library}): {what}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_and_values_pass_through() {
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
    fn short_paths_of_registry_sources() {
        assert_eq!(
            short_path("/home/u/.cargo/registry/src/index.crates.io-abc/tract-core-0.23.9/src/ops/cnn/padding.rs"),
            "tract-core-0.23.9/src/ops/cnn/padding.rs"
        );
        assert_eq!(short_path("src/model.rs"), "src/model.rs");
    }
}
