//! Admission by memory: every render and every derivative build reserves its estimated
//! peak (`imaging::Preflight::memory_need`, `imaging::pyramid_memory_need`, read from the headers)
//! from one process-wide budget before it may run, and gives it back when it really ends.
//! A render reserves its source's size before reading it and the rest once it holds a CPU
//! slot (`edge::run_job`), so renders waiting in the CPU queue hold only their sources.
//!
//! Invariants:
//! - the reservations held never add up to more than the budget, so the pixel buffers of
//!   the work admitted stay within it whatever arrives (a burst of 100 MP bombs is admitted
//!   one at a time, beside the small renders that fit);
//! - a need larger than the whole budget is refused at once (`TooLarge`: the edge answers
//!   422 from the header, nothing decoded);
//! - a need that does not fit now waits, up to the caller's limit, for reservations to end
//!   (`Busy`: the edge answers 503 + Retry-After). Waiting is not first-come-first-served:
//!   whenever memory comes back every waiter looks again, and whoever fits goes, so a
//!   small render is never stuck behind a bomb that waits for the whole budget;
//! - a reservation is a value: it is moved into the CPU job and dropped when the job ends,
//!   also when its caller has gone (cancellation), so memory is given back exactly once.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    /// More than the whole budget: can never run.
    #[error("needs about {need} bytes of memory, more than the whole budget of {budget} bytes")]
    TooLarge { need: u64, budget: u64 },
    /// Did not fit before the caller's limit.
    #[error("memory budget busy")]
    Busy,
}

/// The process-wide memory budget. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    total: u64,
    free: Mutex<u64>,
    returned: Notify,
    metrics: Arc<Metrics>,
}

impl Inner {
    /// Updates the reserved-bytes gauge from the free count, and unlocks it.
    fn publish(&self, free: std::sync::MutexGuard<'_, u64>) {
        let reserved = self.total - *free;
        drop(free);
        self.metrics
            .memory_reserved
            .set(i64::try_from(reserved).unwrap_or(i64::MAX));
    }
}

/// Memory held from the budget; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    inner: Arc<Inner>,
    bytes: u64,
}

impl MemoryBudget {
    pub fn new(total: u64, metrics: Arc<Metrics>) -> MemoryBudget {
        metrics
            .memory_budget
            .set(i64::try_from(total).unwrap_or(i64::MAX));
        MemoryBudget {
            inner: Arc::new(Inner {
                total,
                free: Mutex::new(total),
                returned: Notify::new(),
                metrics,
            }),
        }
    }

    pub fn total(&self) -> u64 {
        self.inner.total
    }

    /// Bytes reserved right now.
    pub fn reserved(&self) -> u64 {
        self.inner.total - *self.free()
    }

    fn free(&self) -> std::sync::MutexGuard<'_, u64> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `TooLarge` when `bytes` could never fit, counted as a refusal; reserves nothing.
    pub fn check(&self, bytes: u64) -> Result<(), BudgetError> {
        if bytes > self.inner.total {
            self.inner.metrics.memory_refused.inc();
            return Err(BudgetError::TooLarge {
                need: bytes,
                budget: self.inner.total,
            });
        }
        Ok(())
    }

    /// Reserves `bytes` if they fit now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        self.try_reserve_leaving(bytes, 0)
    }

    /// Reserves `bytes` if they fit now with `keep` bytes still free afterwards.
    fn try_reserve_leaving(&self, bytes: u64, keep: u64) -> Option<Reservation> {
        let mut free = self.free();
        if *free < bytes.saturating_add(keep) {
            return None;
        }
        *free -= bytes;
        self.inner.publish(free);
        Some(Reservation {
            inner: self.inner.clone(),
            bytes,
        })
    }

    /// Reserves `bytes`, waiting until `until` at the latest for them to fit.
    pub async fn reserve(&self, bytes: u64, until: Instant) -> Result<Reservation, BudgetError> {
        self.reserve_leaving(bytes, 0, until).await
    }

    /// Reserves memory for a source about to be read (`bytes`, its registered size), the
    /// first part of a render's reservation, to be grown to the render's need once the
    /// headers are read ([`Reservation::grow_to`]). Sources alone never take the last
    /// quarter of the budget, so the renders that have read theirs can always grow.
    pub async fn reserve_source(
        &self,
        bytes: u64,
        until: Instant,
    ) -> Result<Reservation, BudgetError> {
        let total = self.inner.total;
        let keep = (total / 4).min(total.saturating_sub(bytes));
        self.reserve_leaving(bytes, keep, until).await
    }

    async fn reserve_leaving(
        &self,
        bytes: u64,
        keep: u64,
        until: Instant,
    ) -> Result<Reservation, BudgetError> {
        self.check(bytes)?;
        loop {
            // Registered before looking, so a reservation given back in between wakes us.
            let returned = self.inner.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(r) = self.try_reserve_leaving(bytes, keep) {
                return Ok(r);
            }
            if tokio::time::timeout_at(until, returned).await.is_err() {
                self.inner.metrics.memory_waits_expired.inc();
                return Err(BudgetError::Busy);
            }
        }
    }
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// This reservation grown to `bytes` in all (unchanged when it holds that much
    /// already), waiting until `until` at the latest. On failure the memory held so far
    /// is given back too.
    pub async fn grow_to(mut self, bytes: u64, until: Instant) -> Result<Reservation, BudgetError> {
        if bytes <= self.bytes {
            return Ok(self);
        }
        let budget = MemoryBudget {
            inner: self.inner.clone(),
        };
        budget.check(bytes)?;
        let mut extra = budget.reserve(bytes - self.bytes, until).await?;
        self.bytes += std::mem::take(&mut extra.bytes);
        Ok(self)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut free = self
            .inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *free += self.bytes;
        self.inner.publish(free);
        self.inner.returned.notify_waiters();
    }
}

/// Jobs that reserved at least this much hand their freed buffers back to the operating
/// system when they end ([`settle`]).
pub const LARGE_JOB_BYTES: u64 = 32 << 20;

/// Ends a job's reservation, on the thread that ran the job, after its buffers are freed.
/// The allocator keeps freed memory for reuse by the same thread (`memory.rs`), which is
/// right for the small jobs of normal traffic; but a large job's buffers kept on one CPU
/// thread while the next large job is admitted on another put the process at twice the
/// budget (measured with `loadtest/burst.py`: ~500 MiB of RSS on a 192 MiB budget). So
/// after a large job this thread hands its freed memory back first, and only then is the
/// memory given back to the budget.
pub fn settle(reservation: Reservation) {
    if reservation.bytes() >= LARGE_JOB_BYTES {
        crate::memory::release_thread();
    }
    drop(reservation);
}

/// The default budget: an eighth of the memory the process may use (the smaller of the
/// machine's and the cgroup's limit), between 64 MiB and 128 MiB. The upper bound keeps the
/// whole process under 400 MiB through a hostile burst on the other defaults (measured by
/// `loadtest/burst.py`: peak RSS is about 50 MiB plus 1.5 to 2.5 times the budget, the
/// rest being buffers the allocator keeps for reuse, per-thread heaps and sources in
/// flight; 160 MiB measured 348-407 MiB); raise it for sources over about 15 megapixels of
/// PNG or WebP with alpha, or 30 megapixels of progressive JPEG.
pub fn default_budget() -> u64 {
    const MIB: u64 = 1 << 20;
    let available = [machine_memory(), cgroup_limit()]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(2048 * MIB);
    (available / 8).clamp(64 * MIB, 128 * MIB)
}

fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn cgroup_limit() -> Option<u64> {
    // cgroup v2, then v1; "max" (or a v1 "no limit" near u64::MAX) is no limit.
    [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|t| t.trim().parse::<u64>().ok())
    .filter(|&v| v < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(total: u64) -> MemoryBudget {
        MemoryBudget::new(total, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn reservations_never_exceed_the_budget_and_come_back_on_drop() {
        let b = budget(100);
        let soon = Instant::now() + Duration::from_millis(50);
        let a = b.reserve(60, soon).await.unwrap();
        assert_eq!(b.reserved(), 60);
        assert_eq!(b.reserve(50, soon).await.unwrap_err(), BudgetError::Busy);
        let c = b.reserve(40, soon).await.unwrap();
        assert_eq!(b.reserved(), 100);
        drop(a);
        drop(c);
        assert_eq!(b.reserved(), 0);
        assert_eq!(
            b.reserve(101, soon).await.unwrap_err(),
            BudgetError::TooLarge {
                need: 101,
                budget: 100
            }
        );
    }

    #[tokio::test]
    async fn a_waiter_goes_when_memory_comes_back_and_small_needs_pass_a_large_one() {
        let b = budget(100);
        let later = Instant::now() + Duration::from_secs(30);
        let held = b.reserve(90, later).await.unwrap();
        // A large waiter first, then a small one: the small one fits as soon as 20 bytes
        // come back, while the large one keeps waiting.
        let large = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(95, later).await.map(|r| r.bytes()) }
        });
        let small = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(20, later).await }
        });
        tokio::task::yield_now().await;
        let partial = b.try_reserve(10).unwrap();
        drop(held); // 90 back: 90 free, the small one takes 20, 70 left; the large waits.
        let small = small.await.unwrap().unwrap();
        assert_eq!(b.reserved(), 30);
        assert!(!large.is_finished());
        drop(small);
        drop(partial);
        assert_eq!(large.await.unwrap(), Ok(95));
        assert_eq!(b.reserved(), 0);
    }

    #[tokio::test]
    async fn sources_leave_a_quarter_for_growing_and_a_grown_reservation_comes_back_whole() {
        let b = budget(100);
        let soon = Instant::now() + Duration::from_millis(30);
        let s1 = b.reserve_source(40, soon).await.unwrap();
        let s2 = b.reserve_source(30, soon).await.unwrap();
        // 30 free: a third source of 10 would leave less than the quarter kept for growth.
        assert_eq!(
            b.reserve_source(10, soon).await.unwrap_err(),
            BudgetError::Busy
        );
        let grown = s1.grow_to(65, soon).await.unwrap();
        assert_eq!((grown.bytes(), b.reserved()), (65, 95));
        assert_eq!(
            s2.grow_to(101, soon).await.unwrap_err(),
            BudgetError::TooLarge {
                need: 101,
                budget: 100
            }
        );
        assert_eq!(b.reserved(), 65, "a failed growth gives back what it held");
        drop(grown);
        assert_eq!(b.reserved(), 0);
        // A source larger than three quarters still goes alone.
        let big = b.reserve_source(90, soon).await.unwrap();
        assert_eq!(b.reserved(), 90);
        drop(big);
    }

    #[test]
    fn the_default_is_an_eighth_of_memory_within_bounds() {
        assert_eq!(
            parse_meminfo("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
        let d = default_budget();
        assert!((64 << 20..=128 << 20).contains(&d), "{d}");
    }
}
