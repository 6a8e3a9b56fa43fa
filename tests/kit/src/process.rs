//! Running child processes in tests with a deadline.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Waits for `child`, looking every `poll`; kills it and fails the test if
/// it has not finished within 120 s (a hang is a failure, not a stuck
/// suite). `what` names it in the failure.
pub fn wait_or_kill(child: &mut Child, what: &str, poll: Duration) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within 120 s (a hang?)");
        }
        std::thread::sleep(poll);
    }
}
