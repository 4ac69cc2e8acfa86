//! How long to wait before trying again, and how often to try: one type,
//! with a named policy for each kind of retry.

use std::time::Duration;

/// How the wait grows from one failure to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Growth {
    /// `first`, then twice as long each time.
    Doubling,
    /// `first`, then `first` longer each time.
    Linear,
}

/// A retry policy: the wait after each failure, and how many tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    growth: Growth,
    max: Duration,
    /// Tries in all, the first included; `u32::MAX` for a policy that
    /// waits out failures for as long as they last.
    pub tries: u32,
}

impl Backoff {
    /// Between attempts at a batch, and between passes over a store or
    /// broker that fails: 1 s, 2 s, 4 s ... at most a minute, for as long
    /// as it takes.
    pub const ATTEMPTS: Backoff = Backoff {
        first: Duration::from_secs(1),
        growth: Growth::Doubling,
        max: Duration::from_secs(60),
        tries: u32::MAX,
    };

    /// A run until caught up meets a store or broker that fails: it waits
    /// as [`Backoff::ATTEMPTS`] does, three tries in all, and then ends
    /// with the error.
    pub const CAUGHT_UP: Backoff = Backoff { tries: 3, ..Backoff::ATTEMPTS };

    /// A retryable error inside one attempt (a read, a write): 1 s, 2 s,
    /// three tries in all before the attempt fails.
    pub const IN_ATTEMPT: Backoff = Backoff { tries: 3, ..Backoff::ATTEMPTS };

    /// Moving a committed batch's files into place: 200 ms, 400 ms, 600 ms,
    /// after which the next pass finishes it.
    pub const PUBLISH: Backoff =
        Backoff { first: Duration::from_millis(200), growth: Growth::Linear, max: Duration::from_secs(60), tries: 3 };

    /// The policy for errors of a run: waited out for as long as they last,
    /// or for [`Backoff::CAUGHT_UP`]'s tries when the run ends once caught up.
    pub fn for_run(until_caught_up: bool) -> Backoff {
        if until_caught_up { Backoff::CAUGHT_UP } else { Backoff::ATTEMPTS }
    }

    /// How long to wait after failure number `failures` (1 for the first).
    pub fn wait(&self, failures: u32) -> Duration {
        let steps = failures.max(1) - 1;
        let wait = match self.growth {
            Growth::Doubling => self.first.saturating_mul(1u32 << steps.min(16)),
            Growth::Linear => self.first.saturating_mul(steps + 1),
        };
        wait.min(self.max)
    }

    /// Whether failure number `failures` was the last try.
    pub fn exhausted(&self, failures: u32) -> bool {
        failures >= self.tries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_double_up_to_a_minute_and_never_run_out() {
        let waits: Vec<u64> = (1..=8).map(|n| Backoff::ATTEMPTS.wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(Backoff::ATTEMPTS.wait(1000), Duration::from_secs(60));
        assert!(!Backoff::ATTEMPTS.exhausted(1_000_000));
    }

    #[test]
    fn a_run_until_caught_up_tries_three_times() {
        assert!(!Backoff::for_run(true).exhausted(2));
        assert!(Backoff::for_run(true).exhausted(3));
        assert_eq!(Backoff::for_run(false), Backoff::ATTEMPTS);
    }

    #[test]
    fn publishing_waits_a_little_longer_each_time() {
        let waits: Vec<u128> = (1..=3).map(|n| Backoff::PUBLISH.wait(n).as_millis()).collect();
        assert_eq!(waits, [200, 400, 600]);
        assert!(Backoff::PUBLISH.exhausted(3));
    }
}
