//! The only bridge from async code to CPU-heavy work (decode, resize, encode).
//!
//! Invariants:
//! - at most `concurrency` jobs run at once, on tokio's blocking threads, never on the
//!   async workers;
//! - at most `queue_length` more may wait for a slot; beyond that `submit` refuses at once
//!   with `Overloaded` (the edge answers 503 + Retry-After) instead of queueing without end;
//! - a job's slot is held until the job really ends, even when its caller has gone, so the
//!   bound holds under cancellation;
//! - every job gets a cancel flag that is raised when its caller is dropped (client gone)
//!   or its deadline passes; imaging checks it between stages.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuError {
    #[error("transform queue is full")]
    Overloaded,
    #[error("transform deadline passed")]
    Deadline,
    #[error("transform thread panicked")]
    Panicked,
}

/// Bounded CPU pool. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CpuPool {
    admission: Arc<Semaphore>,
    running: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

/// Raises the cancel flag when dropped: the job's caller went away or gave up.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Keeps the queue-depth gauge honest however the waiting ends.
struct Waiting<'a>(&'a Metrics);

impl<'a> Waiting<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.queue_depth.inc();
        Waiting(metrics)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.queue_depth.dec();
    }
}

impl CpuPool {
    pub fn new(concurrency: usize, queue_length: usize, metrics: Arc<Metrics>) -> CpuPool {
        let concurrency = concurrency.max(1);
        CpuPool {
            admission: Arc::new(Semaphore::new(concurrency + queue_length)),
            running: Arc::new(Semaphore::new(concurrency)),
            metrics,
        }
    }

    /// Runs `job` on a blocking thread once a slot is free, giving it a cancel flag.
    /// Refuses at once when the queue is full; gives up at `deadline`.
    pub async fn submit<T, F>(&self, deadline: Instant, job: F) -> Result<T, CpuError>
    where
        T: Send + 'static,
        F: FnOnce(&AtomicBool) -> T + Send + 'static,
    {
        let Ok(admitted) = self.admission.clone().try_acquire_owned() else {
            self.metrics.shed.inc();
            return Err(CpuError::Overloaded);
        };
        let slot = {
            let _waiting = Waiting::new(&self.metrics);
            let acquire = self.running.clone().acquire_owned();
            match tokio::time::timeout_at(deadline, acquire).await {
                Ok(permit) => permit.expect("invariant: the CPU semaphore is never closed"),
                Err(_) => return Err(CpuError::Deadline),
            }
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancel.clone());
        let metrics = self.metrics.clone();
        let handle = tokio::task::spawn_blocking(move || {
            // Both permits live until the job itself ends, whatever happened to the caller.
            let _slots = (admitted, slot);
            metrics.transforms_running.inc();
            let out = job(&cancel);
            metrics.transforms_running.dec();
            out
        });
        let result = tokio::time::timeout_at(deadline, handle).await;
        drop(guard);
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_join)) => Err(CpuError::Panicked),
            Err(_) => Err(CpuError::Deadline),
        }
    }
}

/// Convenience for callers that think in durations.
pub fn deadline_after(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(concurrency: usize, queue: usize) -> CpuPool {
        CpuPool::new(concurrency, queue, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn runs_jobs_off_the_runtime() {
        let p = pool(1, 0);
        let name = p
            .submit(deadline_after(Duration::from_secs(5)), |_| {
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .unwrap();
        assert_ne!(name.as_deref(), Some("tokio-runtime-worker"));
    }

    #[tokio::test]
    async fn full_queue_is_refused_at_once() {
        let p = pool(1, 1);
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let far = deadline_after(Duration::from_secs(30));
        let running = tokio::spawn({
            let p = p.clone();
            async move {
                p.submit(far, move |_| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                })
                .await
            }
        });
        started_rx.await.unwrap();
        // One may wait in the queue...
        let queued = tokio::spawn({
            let p = p.clone();
            async move { p.submit(far, |_| 7).await }
        });
        tokio::task::yield_now().await;
        while p.metrics.queue_depth.get() == 0 {
            tokio::task::yield_now().await;
        }
        // ...the next is shed.
        assert_eq!(p.submit(far, |_| 0).await, Err(CpuError::Overloaded));
        release_tx.send(()).unwrap();
        running.await.unwrap().unwrap();
        assert_eq!(queued.await.unwrap(), Ok(7));
    }

    #[tokio::test]
    async fn dropped_caller_raises_cancel_flag_and_keeps_the_slot_until_the_job_ends() {
        // One queue place, so the follow-up job waits for the slot instead of being shed.
        let p = pool(1, 1);
        let (seen_tx, seen_rx) = mpsc::channel::<bool>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let far = deadline_after(Duration::from_secs(30));
        let caller = tokio::spawn({
            let p = p.clone();
            async move {
                p.submit(far, move |cancel| {
                    started_tx.send(()).unwrap();
                    while !cancel.load(Ordering::Relaxed) {
                        std::thread::yield_now();
                    }
                    seen_tx.send(true).unwrap();
                })
                .await
            }
        });
        started_rx.await.unwrap();
        caller.abort();
        let seen = tokio::task::spawn_blocking(move || seen_rx.recv().unwrap())
            .await
            .unwrap();
        assert!(seen);
        // The slot frees once the job has returned: the next job then runs.
        assert_eq!(p.submit(far, |_| 1).await, Ok(1));
        assert_eq!(p.metrics.transforms_running.get(), 0);
    }

    #[tokio::test]
    async fn deadline_gives_up_and_cancels() {
        let p = pool(1, 0);
        let (seen_tx, seen_rx) = mpsc::channel::<()>();
        let soon = deadline_after(Duration::from_millis(20));
        let out = p
            .submit(soon, move |cancel| {
                while !cancel.load(Ordering::Relaxed) {
                    std::thread::yield_now();
                }
                seen_tx.send(()).unwrap();
            })
            .await;
        assert_eq!(out, Err(CpuError::Deadline));
        tokio::task::spawn_blocking(move || seen_rx.recv().unwrap())
            .await
            .unwrap();
    }
}
