//! The crate's one retry policy for transient failures (a device-mapper or
//! loop device briefly busy): a bounded number of tries, with a pause that
//! grows linearly up to a cap.

#![allow(dead_code)] // Taken up by dm, loopdev and deviceset in the structure split.

use std::time::Duration;

/// How many times to try, and how long to pause between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    tries: u32,
    first: Duration,
    step: Duration,
    cap: Duration,
}

impl Backoff {
    /// For EBUSY from a device that udev or a closing opener holds for a
    /// moment: 20 tries, 20 ms growing by 10 ms to at most 200 ms (about 2.5 s
    /// in all), like libdm's `dm_task_retry_remove`.
    pub(crate) const BUSY: Backoff = Backoff::new(20, 20, 10, 200);

    /// `tries` tries (at least one); pauses of `first_ms`, then `step_ms`
    /// more each time, at most `cap_ms`.
    pub(crate) const fn new(tries: u32, first_ms: u64, step_ms: u64, cap_ms: u64) -> Backoff {
        Backoff {
            tries: if tries == 0 { 1 } else { tries },
            first: Duration::from_millis(first_ms),
            step: Duration::from_millis(step_ms),
            cap: Duration::from_millis(cap_ms),
        }
    }

    /// The same pauses with another number of tries (at least one).
    pub(crate) const fn with_tries(self, tries: u32) -> Backoff {
        Backoff {
            tries: if tries == 0 { 1 } else { tries },
            ..self
        }
    }

    /// How many tries in all.
    pub(crate) const fn tries(&self) -> u32 {
        self.tries
    }

    /// The pause after `failures` failed tries (1 for the first pause).
    pub(crate) fn pause(&self, failures: u32) -> Duration {
        let grown = self.first + self.step.saturating_mul(failures.saturating_sub(1));
        grown.min(self.cap)
    }

    /// Runs `attempt` (given the 1-based try number) until it succeeds, fails
    /// with an error `transient` rejects, or the tries are used up; the last
    /// error is returned then. Sleeps [`Backoff::pause`] between tries.
    pub(crate) fn run<T, E>(
        &self,
        mut attempt: impl FnMut(u32) -> Result<T, E>,
        transient: impl Fn(&E) -> bool,
    ) -> Result<T, E> {
        let mut tried = 1;
        loop {
            match attempt(tried) {
                Err(e) if tried < self.tries && transient(&e) => {
                    std::thread::sleep(self.pause(tried));
                    tried += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap() {
        let b = Backoff::new(5, 20, 10, 45);
        let pauses: Vec<u64> = (1..=5).map(|n| b.pause(n).as_millis() as u64).collect();
        assert_eq!(pauses, [20, 30, 40, 45, 45]);
        assert_eq!(Backoff::new(0, 1, 1, 1).tries(), 1);
        assert_eq!(Backoff::BUSY.with_tries(3).tries(), 3);
    }

    #[test]
    fn run_stops_at_success_permanent_error_or_last_try() {
        let quick = Backoff::new(4, 0, 0, 0);
        let mut seen = Vec::new();
        let r: Result<u32, &str> = quick.run(
            |n| {
                seen.push(n);
                if n < 3 {
                    Err("busy")
                } else {
                    Ok(n)
                }
            },
            |e| *e == "busy",
        );
        assert_eq!((r, seen.as_slice()), (Ok(3), &[1, 2, 3][..]));

        // Always failing with `err`: the result and how many calls were made.
        let always = |err: &'static str| {
            let mut calls = 0;
            let r: Result<(), &str> = quick.run(
                |_| {
                    calls += 1;
                    Err(err)
                },
                |e| *e == "busy",
            );
            (r, calls)
        };
        assert_eq!(always("gone"), (Err("gone"), 1));
        assert_eq!(always("busy"), (Err("busy"), 4));
    }
}
