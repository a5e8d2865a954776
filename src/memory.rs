//! Handing memory back to the operating system once the heavy work goes quiet.
//!
//! The binary's allocator (mimalloc) keeps freed memory for a short while (its purge
//! delay), so that the next render reuses a decode buffer instead of faulting fresh pages
//! in. But it hands that memory back only from inside later allocations and frees, and a
//! block freed by another thread than the one that allocated it stays with the allocating
//! thread until that thread allocates again: when the work stops, nothing runs that code,
//! and the process keeps its peak. Measured (release build, fs backend): a server that had
//! just built 76 files' reduced copies sat at 290 MB, idle, indefinitely, and 88-95 MB with
//! this module; after 20 s of W1 at 8 connections, 228 MB of anonymous memory fell to 45 MB
//! within five seconds of the last response and stayed at 43 MB for the next 90 s
//! (`tests/it/cli.rs` checks the same on a 12 MP file).
//!
//! So the threads that do the heavy work (the CPU pool's and the derivative builder's,
//! `cpu::Threads`) mark each job [`busy`], and when their queue stays empty they ask
//! [`Quiet::idle`] what to do: once no job has run anywhere in the process for
//! [`QUIET_AFTER`], each such thread drops its resizer scratch and calls the release hook
//! once, on itself (the allocator's per-thread state can only be collected by its own
//! thread), and then sleeps until the next job. The async runtime's workers do the same
//! when they park ([`on_park`]): they allocate the source buffers the CPU threads free.
//! The hooks are the binary's to set ([`set_hooks`]): the library does not know the
//! allocator, and without hooks nothing is done.
//!
//! Besides the per-thread release there is a process-wide pair, [`Hooks::settle`] once per
//! quiet period and [`Hooks::resume`] on the first job after it. The binary uses them to
//! turn transparent huge pages off while idle and on again for work: the kernel's
//! khugepaged otherwise refills, every 10 s, each 2 MiB stretch of the allocator's arena
//! that still holds one live page, undoing the release (measured: 49 -> 62 MB of
//! anonymous memory in 80 s of idling after a W1 run, still climbing), while under load
//! huge pages save about a tenth of the CPU per render.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// How long the process must have run no heavy job before memory is handed back.
/// Well above the allocator's purge delay and the gap between jobs under load (100-200 ms
/// per thread), so a loaded service never pays for it.
pub const QUIET_AFTER: Duration = Duration::from_secs(1);

/// What the binary does to hand memory back.
#[derive(Debug, Clone, Copy)]
pub struct Hooks {
    /// On each worker thread, once per quiet period: hand back what the calling thread's
    /// allocator holds and everything freed process-wide.
    pub release: fn(),
    /// Once per quiet period, process-wide, before the first release.
    pub settle: fn(),
    /// On the first heavy job after `settle` ran, before the job: undo `settle`.
    pub resume: fn(),
}

static HOOKS: OnceLock<Hooks> = OnceLock::new();

/// Sets the hooks (once per process; a second call is ignored and returns false).
pub fn set_hooks(hooks: Hooks) -> bool {
    HOOKS.set(hooks).is_ok()
}

/// The process-wide record of heavy work.
pub static QUIET: Quiet = Quiet::new();

/// Marks a heavy job as running until dropped (see [`Quiet::busy`]); the first one after
/// a quiet period runs the resume hook.
pub fn busy() -> Busy<'static> {
    QUIET.busy_resuming(|| {
        if let Some(hooks) = HOOKS.get() {
            (hooks.resume)();
        }
    })
}

/// Jobs running now, and when the last one ended.
#[derive(Debug)]
pub struct Quiet {
    running: AtomicUsize,
    /// Bumped whenever a job ends: a thread that released at an older count has more to
    /// release.
    ended: AtomicU64,
    /// When the last job ended, in milliseconds since `origin`.
    last_end_ms: AtomicU64,
    origin: OnceLock<Instant>,
    /// Whether the settle hook has run and no job has started since.
    settled: AtomicBool,
    /// Serialises settling and resuming, so the two hooks always alternate.
    switch: Mutex<()>,
}

/// A running job; ending it (dropping) records the time.
#[derive(Debug)]
pub struct Busy<'a>(&'a Quiet);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let quiet = self.0;
        quiet.last_end_ms.store(quiet.now_ms(), Ordering::Relaxed);
        quiet.ended.fetch_add(1, Ordering::Release);
        quiet.running.fetch_sub(1, Ordering::Release);
    }
}

/// What an idle worker thread should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Nothing to hand back: wait for the next job, however long.
    Wait,
    /// Not quiet long enough yet: wait for a job at most this long, then ask again.
    CheckIn(Duration),
    /// Quiet: release now, then tell the tracker ([`Tracker::released`]).
    Release,
}

/// One worker thread's view: which job endings it has released after.
#[derive(Debug, Default)]
pub struct Tracker {
    released_at: u64,
}

impl Quiet {
    pub const fn new() -> Quiet {
        Quiet {
            running: AtomicUsize::new(0),
            ended: AtomicU64::new(0),
            last_end_ms: AtomicU64::new(0),
            origin: OnceLock::new(),
            settled: AtomicBool::new(false),
            switch: Mutex::new(()),
        }
    }

    fn now_ms(&self) -> u64 {
        let origin = self.origin.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a job as running until the returned guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.busy_resuming(|| {})
    }

    /// Like [`Quiet::busy`], and if [`Quiet::settle`] ran since the last job started, calls
    /// `resume` first (once, however many jobs start together).
    pub fn busy_resuming(&self, resume: impl FnOnce()) -> Busy<'_> {
        // SeqCst pairs with `settle`: either it sees this job running and does not settle,
        // or this job sees it settled and resumes.
        self.running.fetch_add(1, Ordering::SeqCst);
        if self.settled.load(Ordering::SeqCst) {
            let _switch = self.switch.lock().unwrap_or_else(PoisonError::into_inner);
            if self.settled.load(Ordering::SeqCst) {
                resume();
                self.settled.store(false, Ordering::SeqCst);
            }
        }
        Busy(self)
    }

    /// Calls `settle` unless it already ran since the last job started or a job is running
    /// now; returns whether it ran.
    pub fn settle(&self, settle: impl FnOnce()) -> bool {
        let _switch = self.switch.lock().unwrap_or_else(PoisonError::into_inner);
        if self.settled.load(Ordering::SeqCst) {
            return false;
        }
        self.settled.store(true, Ordering::SeqCst);
        if self.running.load(Ordering::SeqCst) > 0 {
            self.settled.store(false, Ordering::SeqCst);
            return false;
        }
        settle();
        true
    }

    /// What a thread whose queue is empty should do, given how quiet the process has been.
    pub fn idle(&self, tracker: &Tracker, quiet_after: Duration) -> Idle {
        let ended = self.ended.load(Ordering::Acquire);
        if ended == tracker.released_at {
            return Idle::Wait;
        }
        if self.running.load(Ordering::Acquire) > 0 {
            return Idle::CheckIn(quiet_after);
        }
        let since = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_end_ms.load(Ordering::Relaxed)),
        );
        match quiet_after.checked_sub(since) {
            Some(left) if !left.is_zero() => Idle::CheckIn(left),
            _ => Idle::Release,
        }
    }

    /// Records that the thread has released after every job ended so far.
    pub fn released(&self, tracker: &mut Tracker) {
        tracker.released_at = self.ended.load(Ordering::Acquire);
    }
}

impl Default for Quiet {
    fn default() -> Quiet {
        Quiet::new()
    }
}

/// Calls the release hook on this thread now, whatever the rest of the process does
/// (after a job that used a large share of the memory budget, `budget::settle`).
pub fn release_thread() {
    if let Some(hooks) = HOOKS.get() {
        (hooks.release)();
    }
}

/// Calls the release hook on this thread, after the settle hook if this is the quiet
/// period's first release (nothing when the binary set no hooks).
pub fn release() {
    if let Some(hooks) = HOOKS.get() {
        let started = Instant::now();
        QUIET.settle(hooks.settle);
        (hooks.release)();
        tracing::debug!(
            took_ms = started.elapsed().as_millis() as u64,
            "memory handed back"
        );
    }
}

thread_local! {
    static PARKED: std::cell::RefCell<Tracker> = std::cell::RefCell::new(Tracker::default());
}

/// For async worker threads about to park (tokio's `on_thread_park`): releases once per
/// quiet period. A worker that parked before the quiet period began releases the next
/// time it parks (any request, timer or health check wakes it).
pub fn on_park() {
    PARKED.with(|tracker| {
        let mut tracker = tracker.borrow_mut();
        if QUIET.idle(&tracker, QUIET_AFTER) == Idle::Release {
            release();
            QUIET.released(&mut tracker);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_secs(3600);

    #[test]
    fn nothing_to_release_before_any_job() {
        let quiet = Quiet::new();
        assert_eq!(quiet.idle(&Tracker::default(), AFTER), Idle::Wait);
    }

    #[test]
    fn a_thread_waits_out_the_quiet_period_then_releases_once() {
        let quiet = Quiet::new();
        let mut tracker = Tracker::default();
        drop(quiet.busy());
        match quiet.idle(&tracker, AFTER) {
            Idle::CheckIn(left) => assert!(left <= AFTER && left > Duration::ZERO),
            other => panic!("expected a check-in, got {other:?}"),
        }
        // With no quiet period asked for, it is quiet at once.
        assert_eq!(quiet.idle(&tracker, Duration::ZERO), Idle::Release);
        quiet.released(&mut tracker);
        assert_eq!(quiet.idle(&tracker, Duration::ZERO), Idle::Wait);
        // A new job ending makes it due again.
        drop(quiet.busy());
        assert_eq!(quiet.idle(&tracker, Duration::ZERO), Idle::Release);
    }

    #[test]
    fn never_while_a_job_runs_anywhere() {
        let quiet = Quiet::new();
        let tracker = Tracker::default();
        drop(quiet.busy());
        let running = quiet.busy();
        assert_eq!(
            quiet.idle(&tracker, Duration::ZERO),
            Idle::CheckIn(Duration::ZERO)
        );
        drop(running);
        assert_eq!(quiet.idle(&tracker, Duration::ZERO), Idle::Release);
    }

    #[test]
    fn settling_and_resuming_alternate_once_per_quiet_period() {
        let quiet = Quiet::new();
        let (settles, resumes) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let settle = || {
            settles.fetch_add(1, Ordering::Relaxed);
        };
        let resume = || {
            resumes.fetch_add(1, Ordering::Relaxed);
        };
        // Nothing to undo before the first settle.
        drop(quiet.busy_resuming(resume));
        assert_eq!(resumes.load(Ordering::Relaxed), 0);
        assert!(quiet.settle(settle));
        // Every thread releases, but the process settles once.
        assert!(!quiet.settle(settle));
        // The next jobs resume once between them.
        let (a, b) = (quiet.busy_resuming(resume), quiet.busy_resuming(resume));
        assert_eq!(resumes.load(Ordering::Relaxed), 1);
        // No settling while jobs run.
        assert!(!quiet.settle(settle));
        drop((a, b));
        assert!(quiet.settle(settle));
        assert_eq!(settles.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn settles_and_resumes_alternate_under_contention() {
        // Threads start jobs while another keeps settling: whatever the interleaving, the
        // hooks alternate, the first is a settle, and no job runs settled.
        let quiet = Quiet::new();
        let state = Mutex::new(Vec::new());
        let log = |what: &'static str| state.lock().unwrap().push(what);
        std::thread::scope(|scope| {
            let settler = scope.spawn(|| {
                for _ in 0..2000 {
                    quiet.settle(|| log("settle"));
                }
            });
            for _ in 0..2 {
                scope.spawn(|| {
                    for _ in 0..2000 {
                        let job = quiet.busy_resuming(|| log("resume"));
                        // No settle can come while the job runs, so the last word must
                        // not be one.
                        assert_ne!(state.lock().unwrap().last(), Some(&"settle"));
                        drop(job);
                    }
                });
            }
            settler.join().unwrap();
        });
        let log = state.into_inner().unwrap();
        assert!(
            log.windows(2).all(|w| w[0] != w[1]),
            "hooks out of turn: {log:?}"
        );
        assert_eq!(log.first().copied().unwrap_or("settle"), "settle");
    }

    #[test]
    fn every_thread_releases_for_itself() {
        let quiet = Quiet::new();
        let (mut a, mut b) = (Tracker::default(), Tracker::default());
        drop(quiet.busy());
        assert_eq!(quiet.idle(&a, Duration::ZERO), Idle::Release);
        quiet.released(&mut a);
        assert_eq!(quiet.idle(&a, Duration::ZERO), Idle::Wait);
        assert_eq!(quiet.idle(&b, Duration::ZERO), Idle::Release);
        quiet.released(&mut b);
        assert_eq!(quiet.idle(&b, Duration::ZERO), Idle::Wait);
    }
}
