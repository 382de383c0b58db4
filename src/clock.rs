//! Time: the one [`Clock`] that every timing decision reads. Wall time
//! ([`Clock::now`]) for the update policy; monotonic [`Tick`]s and sleeping
//! for hook timeouts, health rounds and deadlines, and the agent's polling.
//! Everything goes through one clock so that a test can move time instead of
//! waiting for it.
//!
//! Production uses [`SystemClock`]. The fake clocks exist only in unit tests
//! and in builds with the `test-seams` feature: `FileClock` reads the time
//! from a file that a test rewrites (it reaches the agent, a separate
//! process, through `SWITCHYARD_FAKE_CLOCK_FILE`); `ManualClock` is moved by
//! unit tests. A release build ignores that variable.

use std::fmt;
use std::future::Future;
use std::ops::Add;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;

/// A reading of a clock's monotonic time. Readings of different clocks do
/// not compare meaningfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Tick(Duration);

impl Tick {
    /// Time from `earlier` to this reading; zero when `earlier` is later.
    pub(crate) fn saturating_duration_since(self, earlier: Tick) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// This reading plus `d`, or `None` when that is unrepresentable (a
    /// timeout so long that it means "never").
    pub(crate) fn checked_add(self, d: Duration) -> Option<Tick> {
        self.0.checked_add(d).map(Tick)
    }
}

/// Saturating: a deadline too far ahead to represent is never reached.
impl Add<Duration> for Tick {
    type Output = Tick;
    fn add(self, d: Duration) -> Tick {
        Tick(self.0.saturating_add(d))
    }
}

/// A future returned by [`Clock::sleep_async`].
pub(crate) type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The source of time, a seam so tests can fake it.
pub(crate) trait Clock: Send + Sync + fmt::Debug {
    /// The current instant, wall time.
    fn now(&self) -> Timestamp;
    /// A monotonic reading, for timeouts, deadlines and durations.
    fn tick(&self) -> Tick;
    /// Blocks the calling thread until `d` of this clock's time has passed.
    fn sleep(&self, d: Duration);
    /// Waits without blocking a thread until `d` of this clock's time has
    /// passed, or at least until it is worth reading the clock again.
    /// Callers loop on [`Clock::tick`] until their deadline.
    fn sleep_async(&self, d: Duration) -> Sleep<'_>;
}

/// Waits, asynchronously, until `clock` reads `until` or later.
pub(crate) async fn sleep_until(clock: &dyn Clock, until: Tick) {
    loop {
        let left = until.saturating_duration_since(clock.tick());
        if left.is_zero() {
            return;
        }
        clock.sleep_async(left).await;
    }
}

/// The real clock.
#[derive(Debug, Default)]
pub(crate) struct SystemClock;

/// One origin for every [`SystemClock`], so their readings compare.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn tick(&self) -> Tick {
        Tick(origin().elapsed())
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }

    fn sleep_async(&self, d: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// The environment variable naming a [`FileClock`] file; obeyed only by
/// builds with the `test-seams` feature.
#[cfg(any(test, feature = "test-seams"))]
pub(crate) const FAKE_CLOCK_ENV: &str = "SWITCHYARD_FAKE_CLOCK_FILE";

/// The clock the agent runs on: the [`SystemClock`], or, in a build with the
/// `test-seams` feature, a `FileClock` on the file named by
/// `SWITCHYARD_FAKE_CLOCK_FILE` when that is set and not empty. Without the
/// feature the variable is not even read.
pub(crate) fn from_env() -> Arc<dyn Clock> {
    #[cfg(feature = "test-seams")]
    let clock = from_var(std::env::var_os(FAKE_CLOCK_ENV));
    #[cfg(not(feature = "test-seams"))]
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    clock
}

/// A [`FileClock`] on `path` when it is set and not empty (logged as a
/// warning: in production it would freeze the agent's time), else the
/// [`SystemClock`].
#[cfg(any(test, feature = "test-seams"))]
pub(crate) fn from_var(path: Option<std::ffi::OsString>) -> Arc<dyn Clock> {
    match path.filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = std::path::PathBuf::from(path);
            tracing::warn!(path = %path.display(), "{FAKE_CLOCK_ENV} is set: reading time from this file (a test seam)");
            Arc::new(FileClock::new(path))
        }
        None => Arc::new(SystemClock),
    }
}

#[cfg(any(test, feature = "test-seams"))]
pub(crate) use fake_file::FileClock;

#[cfg(any(test, feature = "test-seams"))]
mod fake_file {
    use std::path::PathBuf;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use jiff::Timestamp;

    use super::{Clock, Sleep, Tick};
    use crate::fs::FsError;

    /// How often a sleeper looks at the file again: time moves in jumps
    /// when the test rewrites it, and a sleeper should notice promptly.
    const RECHECK: Duration = Duration::from_millis(20);

    /// Why the fake clock's file gave no time (it then falls back to the
    /// system clock).
    #[derive(Debug, thiserror::Error)]
    pub(crate) enum ClockError {
        /// The file could not be read.
        #[error("cannot read the fake clock's file")]
        Read(#[source] FsError),
        /// The file does not hold an instant.
        #[error(
            "{}: {text:?} is not an RFC 3339 instant; write e.g. 2026-05-01T02:00:00Z",
            path.display()
        )]
        Parse {
            /// The file.
            path: PathBuf,
            /// What it holds.
            text: String,
            /// The parser's reason.
            #[source]
            source: jiff::Error,
        },
    }

    /// A fake clock for tests: reads an RFC 3339 instant from a file at every
    /// call, so a test moves time by rewriting the file (atomically, so a
    /// reader never sees it half-written). Between writes time stands
    /// still: whatever sleeps on this clock waits for the test to move it.
    ///
    /// When the file is missing, unreadable or does not hold an instant, it
    /// falls back to the system's wall time and logs a warning, once per
    /// clock. Its monotonic time is the wall time it reads, held where it was
    /// while the file names an earlier instant.
    #[derive(Debug)]
    pub(crate) struct FileClock {
        path: PathBuf,
        warned: AtomicBool,
        /// The highest reading so far, since the Unix epoch.
        high: Mutex<Duration>,
    }

    impl FileClock {
        /// A clock reading `path`.
        pub(crate) fn new(path: PathBuf) -> FileClock {
            FileClock {
                path,
                warned: AtomicBool::new(false),
                high: Mutex::new(Duration::ZERO),
            }
        }

        fn read(&self) -> Result<Timestamp, ClockError> {
            let text = crate::fs::read_to_string(&self.path).map_err(ClockError::Read)?;
            let text = text.trim();
            text.parse::<Timestamp>()
                .map_err(|source| ClockError::Parse {
                    path: self.path.clone(),
                    text: text.to_string(),
                    source,
                })
        }
    }

    impl Clock for FileClock {
        fn now(&self) -> Timestamp {
            match self.read() {
                Ok(t) => t,
                Err(e) => {
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %crate::chain::chain(&e), "fake clock unusable; using the system clock");
                    }
                    Timestamp::now()
                }
            }
        }

        fn tick(&self) -> Tick {
            let since_epoch = self
                .now()
                .duration_since(Timestamp::UNIX_EPOCH)
                .try_into()
                .unwrap_or(Duration::ZERO);
            let mut high = self.high.lock().unwrap_or_else(|p| p.into_inner());
            *high = (*high).max(since_epoch);
            Tick(*high)
        }

        fn sleep(&self, d: Duration) {
            let until = self.tick() + d;
            loop {
                let left = until.saturating_duration_since(self.tick());
                if left.is_zero() {
                    return;
                }
                std::thread::sleep(left.min(RECHECK));
            }
        }

        fn sleep_async(&self, d: Duration) -> Sleep<'_> {
            Box::pin(tokio::time::sleep(d.min(RECHECK)))
        }
    }
}

#[cfg(test)]
pub(crate) use manual::ManualClock;

#[cfg(test)]
mod manual {
    use std::sync::Mutex;
    use std::time::Duration;

    use jiff::Timestamp;

    use super::{Clock, Sleep, Tick};

    /// A fake clock unit tests move by hand. Sleeping on it moves it at once
    /// by the time slept (like tokio's paused time), so code that sleeps
    /// between rounds runs without waiting.
    #[derive(Debug)]
    pub(crate) struct ManualClock {
        /// Wall time and monotonic time, moved together.
        state: Mutex<(Timestamp, Duration)>,
    }

    impl ManualClock {
        /// A clock reading `start`.
        pub(crate) fn new(start: Timestamp) -> ManualClock {
            ManualClock {
                state: Mutex::new((start, Duration::ZERO)),
            }
        }

        /// Moves time forward by `d`.
        pub(crate) fn advance(&self, d: Duration) {
            let mut s = self.state.lock().unwrap();
            s.0 = s.0.checked_add(d).unwrap_or(Timestamp::MAX);
            s.1 = s.1.saturating_add(d);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> Timestamp {
            self.state.lock().unwrap().0
        }

        fn tick(&self) -> Tick {
            Tick(self.state.lock().unwrap().1)
        }

        fn sleep(&self, d: Duration) {
            self.advance(d);
        }

        fn sleep_async(&self, d: Duration) -> Sleep<'_> {
            self.advance(d);
            Box::pin(std::future::ready(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn ticks_add_and_subtract_without_panics() {
        let t = Tick(Duration::from_secs(5));
        assert_eq!(
            (t + Duration::from_secs(2)).saturating_duration_since(t),
            Duration::from_secs(2)
        );
        assert_eq!(
            t.saturating_duration_since(t + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(t.checked_add(Duration::MAX), None);
        assert_eq!(t + Duration::MAX, Tick(Duration::MAX));
    }

    #[test]
    fn system_clocks_share_one_monotonic_time() {
        let (a, b) = (SystemClock, SystemClock);
        let t0 = a.tick();
        a.sleep(Duration::from_millis(20));
        let t1 = b.tick();
        assert!(t1.saturating_duration_since(t0) >= Duration::from_millis(20));
        assert!(a.now() > ts("2020-01-01T00:00:00Z"));
    }

    #[test]
    fn manual_clock_moves_when_told_and_when_slept_on() {
        let c = ManualClock::new(ts("2026-03-28T01:00:00Z"));
        let t0 = c.tick();
        c.advance(Duration::from_secs(60));
        assert_eq!(c.now(), ts("2026-03-28T01:01:00Z"));
        c.sleep(Duration::from_secs(3600));
        assert_eq!(c.now(), ts("2026-03-28T02:01:00Z"));
        assert_eq!(
            c.tick().saturating_duration_since(t0),
            Duration::from_secs(3660)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn sleep_until_follows_the_clock_not_the_wall() {
        let c = ManualClock::new(ts("2026-03-28T01:00:00Z"));
        let until = c.tick() + Duration::from_secs(86_400);
        let real = Instant::now();
        sleep_until(&c, until).await;
        assert!(c.tick() >= until);
        assert!(real.elapsed() < Duration::from_secs(5));

        let f = FileClock::new(PathBuf::from("/nonexistent/clock"));
        let real = Instant::now();
        sleep_until(&f, f.tick() + Duration::from_millis(50)).await;
        assert!(
            real.elapsed() >= Duration::from_millis(40),
            "falls back to real time"
        );
    }

    #[test]
    fn file_clock_reads_and_moves() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("now");
        crate::fs::write_atomic(&path, b"2026-03-28T01:00:00Z\n").unwrap();
        let clock = FileClock::new(path.clone());
        assert_eq!(clock.now(), ts("2026-03-28T01:00:00Z"));
        crate::fs::write_atomic(&path, b"2026-03-28T02:30:00+01:00").unwrap();
        assert_eq!(clock.now(), ts("2026-03-28T01:30:00Z"));
    }

    #[test]
    fn file_clock_falls_back_to_the_system_clock() {
        let d = tempfile::tempdir().unwrap();
        let near_now = |t: Timestamp| {
            let diff = Timestamp::now().duration_since(t).abs();
            diff < jiff::SignedDuration::from_secs(60)
        };
        let clock = FileClock::new(d.path().join("missing"));
        assert!(near_now(clock.now()));
        assert!(near_now(clock.now()), "warns once, keeps working");
        let garbage = d.path().join("garbage");
        crate::fs::write_atomic(&garbage, b"tomorrow").unwrap();
        assert!(near_now(FileClock::new(garbage).now()));
    }

    #[test]
    fn file_clock_ticks_never_go_back_and_sleep_waits_for_the_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("now");
        crate::fs::write_atomic(&path, b"2026-03-28T01:00:00Z").unwrap();
        let clock = Arc::new(FileClock::new(path.clone()));
        let t0 = clock.tick();
        crate::fs::write_atomic(&path, b"2026-03-28T00:00:00Z").unwrap();
        assert_eq!(clock.tick(), t0, "held while the file is behind");
        crate::fs::write_atomic(&path, b"2026-03-28T01:00:00Z").unwrap();

        // An hour's sleep ends when the file moves an hour on, not before.
        let sleeper = {
            let clock = clock.clone();
            std::thread::spawn(move || clock.sleep(Duration::from_secs(3600)))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!sleeper.is_finished(), "time stands still between writes");
        crate::fs::write_atomic(&path, b"2026-03-28T02:00:00Z").unwrap();
        sleeper.join().unwrap();
        assert_eq!(
            clock.tick().saturating_duration_since(t0),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn from_var_picks_the_file_clock() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("now");
        crate::fs::write_atomic(&path, b"2000-01-01T00:00:00Z").unwrap();
        assert_eq!(
            from_var(Some(path.into_os_string())).now(),
            ts("2000-01-01T00:00:00Z")
        );
        assert!(from_var(None).now() > ts("2020-01-01T00:00:00Z"));
        assert!(from_var(Some(Default::default())).now() > ts("2020-01-01T00:00:00Z"));
    }
}
