//! Failpoints: named steps of the commit protocol where a test can make
//! the process die, as `kill -9` would, to prove that the next run
//! repairs whatever the crash left.
//!
//! `SLUICE_FAILPOINT=after_sink_write sluice run ...` aborts the process
//! the first time it reaches that step. `SLUICE_FAILPOINT=after_commit:3`
//! aborts the third time. With `SLUICE_FAILPOINT_ACTION=stop` the process
//! stops itself there instead (SIGSTOP: every thread, as a stalled machine
//! would) until it is sent SIGCONT: a test of a worker that wakes up after
//! its lease ran out. With `SLUICE_FAILPOINT_ACTION=panic` it panics
//! there, as a bug would; `step:*` panics (or aborts) at every hit. The
//! variables are read once; without them, a
//! failpoint costs one relaxed atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The steps a failpoint can stop at, in protocol order.
pub const STEPS: &[&str] = &[
    "before_plan",
    "after_plan",
    "after_lease",
    "during_sink_write",
    "after_sink_write",
    "after_commit",
    "during_publish",
];

struct Armed {
    step: String,
    nth: u64,
    stop: bool,
    panic: bool,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("SLUICE_FAILPOINT").ok()?;
            let (step, nth) = match value.split_once(':') {
                // `*`: every hit, counted as hit 0.
                Some((step, "*")) => (step, 0),
                Some((step, nth)) => (step, nth.parse::<u64>().unwrap_or(1).max(1)),
                None => (value.as_str(), 1),
            };
            if !STEPS.contains(&step) {
                eprintln!("sluice: SLUICE_FAILPOINT={value} names no step; steps: {}", STEPS.join(", "));
                std::process::exit(2);
            }
            let action = std::env::var("SLUICE_FAILPOINT_ACTION").unwrap_or_default();
            let (stop, panic) = (action == "stop", action == "panic");
            Some(Armed { step: step.to_string(), nth, stop, panic, hits: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Aborts the process if `SLUICE_FAILPOINT` names `step` and this is the
/// hit it asks for.
pub fn hit(step: &'static str) {
    debug_assert!(STEPS.contains(&step), "unknown failpoint {step}");
    let Some(armed) = armed() else { return };
    if armed.step == step && (armed.nth == 0 || armed.hits.fetch_add(1, Ordering::Relaxed) + 1 == armed.nth) {
        if armed.panic {
            panic!("failpoint {step} reached: panicking");
        }
        if armed.stop {
            eprintln!("sluice: failpoint {step} reached: stopping until SIGCONT");
            let stopped = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if stopped {
                return;
            }
        }
        eprintln!("sluice: failpoint {step} reached: aborting");
        std::process::abort();
    }
}
