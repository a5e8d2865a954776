//! The only bridge from async code to CPU-heavy work (decode, resize, encode).
//!
//! Invariants:
//! - at most `concurrency` jobs run at once, on the pool's own `concurrency` threads,
//!   never on the async workers. Own threads rather than tokio's blocking pool: that pool
//!   wakes its idle threads in turn (and the filesystem backend's reads use it too), so
//!   jobs wandered over many threads and each thread's allocator heap kept its own share
//!   of freed decode buffers; with a fixed set the next job reuses them;
//! - at most `queue_length` more wait for a slot. Waiters are served oldest first, until
//!   the queue overflows: then the pool is overloaded, the oldest waiter gets `Overloaded`
//!   (the edge answers 503 + Retry-After) to make room, and while requests keep arriving
//!   faster than slots free (moving averages) slots go to the newest waiter first; a
//!   waiter that has waited longer than the average time between two freed slots (one
//!   job over the slots) gets `Overloaded` at the next arrival or freed slot, whichever
//!   comes first, instead of waiting for a slot it would no longer get (the newest waiter is still served when a slot frees). Under sustained
//!   overload the requests that are served are the fresh ones, so their latency stays near
//!   the unloaded one, and the ones refused are refused after about the time between two
//!   freed slots, instead of every request waiting out a full queue (the "adaptive
//!   LIFO" of Facebook's and others' RPC servers, with CoDel's bound on queueing time). A
//!   closed-loop client that never overflows the queue sees plain FIFO;
//! - a job's slot is held until the job really ends, even when its caller has gone, so the
//!   bound holds under cancellation, and a waiter that gives up never keeps a slot;
//! - every job gets a cancel flag that is raised when its caller is dropped (client gone)
//!   or its deadline passes; imaging checks it between stages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::memory;
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
    inner: Arc<Inner>,
    workers: Arc<Threads>,
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of named threads running boxed jobs in arrival order: the pool's (one per
/// slot) and the derivative builder's. They end when the last handle is dropped and the
/// jobs already handed over have run. Each job counts as heavy work for
/// `memory::QUIET`; when the process has been quiet for `memory::QUIET_AFTER`, every
/// thread hands its allocator's memory back once (`memory::release`).
pub struct Threads {
    jobs: crossbeam_channel::Sender<Job>,
}

impl std::fmt::Debug for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Threads").finish_non_exhaustive()
    }
}

impl Threads {
    /// Starts `threads` threads named `<name>-<n>`.
    pub fn spawn(name: &str, threads: usize) -> Threads {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{n}"))
                .spawn(move || {
                    yield_to_the_runtime();
                    work(&queue)
                })
                .expect("cannot start a worker thread");
        }
        Threads { jobs }
    }

    /// Runs `job` on one of the threads; `Panicked` when it panicked or the threads are gone.
    /// Dropping the future does not stop the job (give it a cancel flag for that).
    pub async fn run<T, F>(&self, job: F) -> Result<T, CpuError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let _ = done.send(out);
        });
        self.jobs.send(job).map_err(|_| CpuError::Panicked)?;
        match result.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) | Err(_) => Err(CpuError::Panicked),
        }
    }
}

/// How much nicer than the process every CPU thread runs: heavy work gets a lower
/// scheduling priority than the tokio workers, so under overload the threads that accept
/// connections, answer 503 and write finished responses still get a core at once (a shed
/// answer stays fast, and an accepted request is not kept waiting behind someone else's
/// decode once its own work is done). Idle cores are still used in full: niceness only
/// matters while threads compete. Raising one's own niceness needs no privilege.
const CPU_THREAD_NICENESS: i32 = 10;

/// Raises the calling thread's niceness by `CPU_THREAD_NICENESS`, up to the maximum of 19
/// (on Linux the niceness belongs to the thread, so this one thread only). A failure is
/// harmless and ignored: the thread then runs at the process's priority, as before.
fn yield_to_the_runtime() {
    #[cfg(target_os = "linux")]
    {
        let thread = Some(rustix::thread::gettid());
        if let Ok(now) = rustix::process::getpriority_process(thread) {
            let _ =
                rustix::process::setpriority_process(thread, (now + CPU_THREAD_NICENESS).min(19));
        }
    }
}

/// A worker thread's loop: run jobs; between them, hand memory back once it is quiet.
fn work(queue: &crossbeam_channel::Receiver<Job>) {
    use crossbeam_channel::RecvTimeoutError;
    use memory::{Idle, QUIET};

    let mut tracker = memory::Tracker::default();
    loop {
        let next = match QUIET.idle(&tracker, memory::QUIET_AFTER) {
            Idle::Wait => queue.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Idle::CheckIn(left) => queue.recv_timeout(left.max(Duration::from_millis(10))),
            Idle::Release => {
                crate::imaging::forget_scratch();
                memory::release();
                QUIET.released(&mut tracker);
                continue;
            }
        };
        match next {
            Ok(job) => {
                let _busy = memory::busy();
                job();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[derive(Debug)]
struct Inner {
    concurrency: usize,
    queue_length: usize,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Moving average of a job's run time, in microseconds (0 until the first one ends).
    job_micros: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    waiting: VecDeque<Waiter>,
    /// The queue overflowed, and arrivals have outrun the slots since: serve the newest
    /// waiter first and refuse stale ones.
    overloaded: bool,
    /// When the last request asked for a slot.
    last_arrival: Option<Instant>,
    /// Moving average of the time between two requests asking for a slot, in
    /// microseconds (weight 1/8). The overload ends only when this is longer than the
    /// time between two freed slots: refusing stale waiters keeps the queue short, so it
    /// empties often while arrivals still outrun the slots, and going back to arrival
    /// order then would let it fill again and refuse its oldest only after a whole
    /// queue's worth of waiting.
    arrival_gap_micros: u64,
}

#[derive(Debug)]
struct Waiter {
    tell: oneshot::Sender<Grant>,
    since: Instant,
}

/// What a waiter is told.
#[derive(Debug)]
enum Grant {
    Run(Slot),
    Evicted,
}

/// A running slot. Dropping it hands the slot to the next waiter (or frees it).
#[derive(Debug)]
struct Slot {
    inner: Arc<Inner>,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.inner.release();
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent at every unlock point, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_depth(&self, state: &State) {
        self.metrics.queue_depth.set(state.waiting.len() as i64);
    }

    /// Folds one job's run time into the moving average (weight 1/8).
    fn record_job(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.job_micros.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.job_micros.store(new, Ordering::Relaxed);
    }

    /// How long a waiter may have waited and still be served while overloaded: the average
    /// time between two slots coming free (one job over the number of slots). Newest first,
    /// a waiter that old has seen a slot go to a newer arrival and will see the next go the
    /// same way, so it is told at once instead of waiting for a slot it will not get.
    fn max_overloaded_wait(&self) -> Option<Duration> {
        match self.job_micros.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(
                (micros / self.concurrency as u64).max(1),
            )),
        }
    }

    /// Folds one arrival into the arrival gap's moving average, and ends an overload
    /// that arrivals no longer sustain (also after a long quiet: the first request of a
    /// burst hours later finds the pool back in arrival order).
    fn note_arrival(&self, state: &mut State) {
        let now = Instant::now();
        if let Some(last) = state.last_arrival {
            let gap = u64::try_from(now.duration_since(last).as_micros()).unwrap_or(u64::MAX);
            let old = state.arrival_gap_micros;
            state.arrival_gap_micros = old - old / 8 + gap / 8;
        }
        state.last_arrival = Some(now);
        if state.overloaded && !self.arrivals_outrun_slots(state) {
            state.overloaded = false;
        }
    }

    /// Whether requests arrive more often, on average, than slots come free.
    fn arrivals_outrun_slots(&self, state: &State) -> bool {
        self.max_overloaded_wait()
            .is_some_and(|slot_gap| state.arrival_gap_micros < slot_gap.as_micros() as u64)
    }

    /// While overloaded, refuses every waiter that has already waited longer than
    /// `max_overloaded_wait`, except the newest `keep`: served newest first, such a waiter
    /// would not get a slot any more, so it is told now instead of when the queue next
    /// overflows. Waiters are queued in arrival order, so the stale ones are at the front.
    /// Runs on every arrival and every freed slot, so a refused request waits about the
    /// time between two freed slots plus the gap to the next such event.
    fn shed_stale(&self, state: &mut State, keep: usize) {
        let Some(max_wait) = self.max_overloaded_wait() else {
            return;
        };
        if !state.overloaded {
            return;
        }
        while state.waiting.len() > keep {
            let Some(oldest) = state.waiting.front() else {
                break;
            };
            if oldest.since.elapsed() <= max_wait {
                break;
            }
            let oldest = state.waiting.pop_front().expect("a front was just seen");
            if oldest.tell.send(Grant::Evicted).is_ok() {
                self.metrics.shed.inc();
            }
        }
    }

    /// A slot came free: the next live waiter gets it (newest first while overloaded:
    /// the stale ones are refused first, but the newest is served however long it has
    /// waited, rather than leave the slot idle).
    fn release(self: &Arc<Self>) {
        let mut state = self.lock();
        state.waiting.retain(|w| !w.tell.is_closed());
        self.shed_stale(&mut state, 1);
        loop {
            let next = if state.overloaded {
                state.waiting.pop_back()
            } else {
                state.waiting.pop_front()
            };
            let Some(waiter) = next else {
                state.running -= 1;
                if !self.arrivals_outrun_slots(&state) {
                    state.overloaded = false;
                }
                break;
            };
            let slot = Slot {
                inner: self.clone(),
                armed: true,
            };
            match waiter.tell.send(Grant::Run(slot)) {
                Ok(()) => break,
                // That waiter gave up: disarm the returned slot (no re-entry) and go on.
                Err(Grant::Run(mut slot)) => slot.armed = false,
                Err(Grant::Evicted) => unreachable!("a slot was sent"),
            }
        }
        self.publish_depth(&state);
    }
}

/// Raises the cancel flag when dropped: the job's caller went away or gave up.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl CpuPool {
    pub fn new(concurrency: usize, queue_length: usize, metrics: Arc<Metrics>) -> CpuPool {
        let concurrency = concurrency.max(1);
        CpuPool {
            workers: Arc::new(Threads::spawn("imgedge-cpu", concurrency)),
            inner: Arc::new(Inner {
                concurrency,
                queue_length,
                state: Mutex::new(State::default()),
                metrics,
                job_micros: AtomicU64::new(0),
            }),
        }
    }

    /// A running slot at once, or a place in the queue (evicting the oldest waiter when
    /// the queue is full), or `Overloaded` when there is no queue at all.
    fn admit(&self) -> Result<Result<Slot, oneshot::Receiver<Grant>>, CpuError> {
        let inner = &self.inner;
        let mut state = inner.lock();
        inner.note_arrival(&mut state);
        if state.running < inner.concurrency {
            state.running += 1;
            return Ok(Ok(Slot {
                inner: inner.clone(),
                armed: true,
            }));
        }
        if inner.queue_length == 0 {
            inner.metrics.shed.inc();
            return Err(CpuError::Overloaded);
        }
        state.waiting.retain(|w| !w.tell.is_closed());
        inner.shed_stale(&mut state, 0);
        if state.waiting.len() >= inner.queue_length {
            state.overloaded = true;
            if let Some(oldest) = state.waiting.pop_front() {
                // Its receiver may be gone meanwhile; then nobody needs telling.
                let _ = oldest.tell.send(Grant::Evicted);
                inner.metrics.shed.inc();
            }
        }
        let (tx, rx) = oneshot::channel();
        state.waiting.push_back(Waiter {
            tell: tx,
            since: Instant::now(),
        });
        inner.publish_depth(&state);
        Ok(Err(rx))
    }

    /// Whether the queue has overflowed and requests still arrive faster than slots free
    /// (`State::overloaded`). Callers use it to put off
    /// work they would otherwise do before queueing (reading the source), since most
    /// arrivals are refused while it lasts.
    pub fn overloaded(&self) -> bool {
        self.inner.lock().overloaded
    }

    /// Waits for a running slot (queueing like `submit`), to be used with
    /// [`Reservation::run`]. Dropping the reservation unused frees the slot.
    pub async fn reserve(&self, deadline: Instant) -> Result<Reservation, CpuError> {
        let slot = match self.admit() {
            Ok(Ok(slot)) => slot,
            Ok(Err(waiting)) => match tokio::time::timeout_at(deadline, waiting).await {
                Ok(Ok(Grant::Run(slot))) => slot,
                // Evicted for a newer request, or the pool went away.
                Ok(Ok(Grant::Evicted)) | Ok(Err(_)) => return Err(CpuError::Overloaded),
                Err(_) => return Err(CpuError::Deadline),
            },
            Err(e) => return Err(e),
        };
        Ok(Reservation {
            slot,
            workers: self.workers.clone(),
        })
    }

    /// Runs `job` on one of the pool's threads once a slot is free, giving it a cancel
    /// flag. Refuses (`Overloaded`) when the queue overflows; gives up at `deadline`.
    pub async fn submit<T, F>(&self, deadline: Instant, job: F) -> Result<T, CpuError>
    where
        T: Send + 'static,
        F: FnOnce(&AtomicBool) -> T + Send + 'static,
    {
        self.reserve(deadline).await?.run(deadline, job).await
    }
}

/// A running slot held before its job is known (see [`CpuPool::reserve`]).
#[derive(Debug)]
pub struct Reservation {
    slot: Slot,
    workers: Arc<Threads>,
}

impl Reservation {
    /// Runs `job` on the reserved slot; gives up waiting for it at `deadline` (the job
    /// itself still ends, with its cancel flag raised, before the slot is free again).
    pub async fn run<T, F>(self, deadline: Instant, job: F) -> Result<T, CpuError>
    where
        T: Send + 'static,
        F: FnOnce(&AtomicBool) -> T + Send + 'static,
    {
        let Reservation { slot, workers } = self;
        let cancel = Arc::new(AtomicBool::new(false));
        let guard = CancelOnDrop(cancel.clone());
        let metrics = slot.inner.metrics.clone();
        let run = move || {
            // The slot lives until the job itself ends, whatever happened to the caller.
            let slot = slot;
            metrics.transforms_running.inc();
            let started = std::time::Instant::now();
            // Caught here too, so that a panicking job is still counted and its slot freed.
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&cancel)));
            slot.inner.record_job(started.elapsed());
            metrics.transforms_running.dec();
            drop(slot);
            out
        };
        // Holding a slot means one of the `concurrency` threads is free or about to be.
        let result = tokio::time::timeout_at(deadline, workers.run(run)).await;
        drop(guard);
        match result {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(_)) | Err(_)) => Err(CpuError::Panicked),
            Err(_) => Err(CpuError::Deadline),
        }
    }
}

/// Convenience for callers that think in durations.
pub fn deadline_after(timeout: Duration) -> Instant {
    Instant::now() + timeout
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests wait on std channels off the runtime
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn pool(concurrency: usize, queue: usize) -> CpuPool {
        CpuPool::new(concurrency, queue, Arc::new(Metrics::new()))
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn cpu_threads_run_below_the_runtime_s_priority() {
        let runtime_niceness = rustix::process::getpriority_process(None).unwrap();
        let threads = Threads::spawn("nice-test", 1);
        let niceness = threads
            .run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(niceness, (runtime_niceness + CPU_THREAD_NICENESS).min(19));
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
    async fn a_panicking_job_frees_its_slot_and_thread() {
        let p = pool(1, 0);
        // Far: with RUST_BACKTRACE set, a loaded machine took over 5 s to capture and
        // print the panic's backtrace.
        let far = deadline_after(Duration::from_secs(120));
        let boom = p.submit(far, |_| -> u32 {
            panic!("job panics (expected in this test)")
        });
        assert_eq!(boom.await, Err(CpuError::Panicked));
        // The only slot and the only thread serve the next job.
        assert_eq!(p.submit(far, |_| 7).await, Ok(7));
    }

    /// A job holding the pool's only slot until `free`.
    struct Busy {
        release: mpsc::Sender<()>,
        running: tokio::task::JoinHandle<Result<(), CpuError>>,
    }

    impl Busy {
        /// Lets the job end and waits until it has.
        async fn free(self) {
            self.release.send(()).unwrap();
            self.running.await.unwrap().unwrap();
        }
    }

    /// Occupies the pool's only slot until the returned job is freed.
    async fn occupy(p: &CpuPool) -> Busy {
        let (release, release_rx) = mpsc::channel::<()>();
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
        Busy { release, running }
    }

    /// Submits a job that records `tag` in `order` when it runs.
    fn spawn_job(
        p: &CpuPool,
        tag: u32,
        order: &Arc<Mutex<Vec<u32>>>,
    ) -> tokio::task::JoinHandle<Result<u32, CpuError>> {
        let far = deadline_after(Duration::from_secs(30));
        let (p, order) = (p.clone(), order.clone());
        tokio::spawn(async move {
            p.submit(far, move |_| {
                order.lock().unwrap().push(tag);
                tag
            })
            .await
        })
    }

    /// `spawn_job`, returning once the job waits in the queue.
    async fn queue(
        p: &CpuPool,
        tag: u32,
        order: &Arc<Mutex<Vec<u32>>>,
    ) -> tokio::task::JoinHandle<Result<u32, CpuError>> {
        let depth = p.inner.metrics.queue_depth.get();
        let handle = spawn_job(p, tag, order);
        while p.inner.metrics.queue_depth.get() == depth {
            tokio::task::yield_now().await;
        }
        handle
    }

    #[tokio::test]
    async fn a_reservation_holds_its_slot_until_it_runs_or_is_dropped() {
        let p = pool(1, 0);
        let far = deadline_after(Duration::from_secs(30));
        let reserved = p.reserve(far).await.unwrap();
        assert_eq!(p.submit(far, |_| 0).await, Err(CpuError::Overloaded));
        assert_eq!(reserved.run(far, |_| 1).await, Ok(1));
        let unused = p.reserve(far).await.unwrap();
        assert!(matches!(p.reserve(far).await, Err(CpuError::Overloaded)));
        drop(unused);
        assert_eq!(p.submit(far, |_| 2).await, Ok(2));
    }

    #[tokio::test]
    async fn no_queue_refuses_at_once() {
        let p = pool(1, 0);
        let busy = occupy(&p).await;
        let far = deadline_after(Duration::from_secs(30));
        assert_eq!(p.submit(far, |_| 0).await, Err(CpuError::Overloaded));
        assert_eq!(p.inner.metrics.shed.get(), 1);
        busy.free().await;
        assert_eq!(p.submit(far, |_| 1).await, Ok(1));
    }

    #[tokio::test]
    async fn waiters_are_served_in_order_while_the_queue_holds() {
        let p = pool(1, 3);
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = occupy(&p).await;
        let a = queue(&p, 1, &order).await;
        let b = queue(&p, 2, &order).await;
        let c = queue(&p, 3, &order).await;
        busy.free().await;
        assert_eq!(
            (a.await.unwrap(), b.await.unwrap(), c.await.unwrap()),
            (Ok(1), Ok(2), Ok(3))
        );
        assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
        assert_eq!(p.inner.metrics.shed.get(), 0);
    }

    #[tokio::test]
    async fn overflow_sheds_the_oldest_and_serves_the_newest_first_until_drained() {
        let p = pool(1, 2);
        // Jobs "take an hour" on average: nobody here waits long enough to be shed for it.
        p.inner.record_job(Duration::from_secs(3600));
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = occupy(&p).await;
        let a = queue(&p, 1, &order).await;
        let b = queue(&p, 2, &order).await;
        // The queue is full: the next arrival evicts the oldest waiter, at once.
        assert!(!p.overloaded());
        let c = spawn_job(&p, 3, &order);
        assert_eq!(a.await.unwrap(), Err(CpuError::Overloaded));
        assert_eq!(p.inner.metrics.shed.get(), 1);
        assert!(p.overloaded());
        busy.free().await;
        assert_eq!((c.await.unwrap(), b.await.unwrap()), (Ok(3), Ok(2)));
        // Newest first while overloaded.
        assert_eq!(*order.lock().unwrap(), [3, 2]);
        // Drained, but requests came faster than slots free: still overloaded.
        assert!(p.overloaded());

        // Jobs now take a millisecond, and the next request comes after ten quiet seconds:
        // it finds the pool back in arrival order, and a burst that fits the queue is
        // served first come, first served, nobody refused.
        p.inner.job_micros.store(1_000, Ordering::Relaxed);
        p.inner.lock().last_arrival = Some(Instant::now() - Duration::from_secs(10));
        order.lock().unwrap().clear();
        let busy = occupy(&p).await;
        assert!(!p.overloaded(), "arrivals no longer outrun the slots");
        let d = queue(&p, 4, &order).await;
        let e = queue(&p, 5, &order).await;
        busy.free().await;
        assert_eq!((d.await.unwrap(), e.await.unwrap()), (Ok(4), Ok(5)));
        assert_eq!(*order.lock().unwrap(), [4, 5]);
        assert_eq!(p.inner.metrics.shed.get(), 1);
        assert_eq!(p.inner.metrics.queue_depth.get(), 0);
    }

    #[tokio::test]
    async fn while_overloaded_a_freed_slot_sheds_the_stale_and_serves_the_newest() {
        let p = pool(1, 2);
        p.inner.record_job(Duration::from_millis(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = occupy(&p).await;
        let a = queue(&p, 1, &order).await;
        let b = queue(&p, 2, &order).await;
        let c = spawn_job(&p, 3, &order);
        assert_eq!(a.await.unwrap(), Err(CpuError::Overloaded));
        // b and c have now waited far longer than the average job. The slot frees: b, the
        // older, is refused; c, the newest, gets the slot rather than leave it idle.
        tokio::time::sleep(Duration::from_millis(20)).await;
        busy.free().await;
        assert_eq!(b.await.unwrap(), Err(CpuError::Overloaded));
        assert_eq!(c.await.unwrap(), Ok(3));
        assert_eq!(*order.lock().unwrap(), [3]);
        assert_eq!(p.inner.metrics.shed.get(), 2);
        eventually_idle(&p).await;
        // A slot is free: the next job runs at once.
        assert_eq!(
            p.submit(deadline_after(Duration::from_secs(30)), |_| 4)
                .await,
            Ok(4)
        );
    }

    /// Waits until no job holds a slot.
    async fn eventually_idle(p: &CpuPool) {
        while p.inner.lock().running > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn while_overloaded_a_stale_waiter_is_refused_at_the_next_arrival() {
        // Before, such a waiter was told only when the queue next overflowed or a slot came
        // free: at twice the sustainable rate its 503 took a full queue's worth of arrivals.
        let p = pool(1, 3);
        // Jobs take 20 ms; requests come at once, far faster than that.
        p.inner.record_job(Duration::from_millis(20));
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = occupy(&p).await;
        let a = queue(&p, 1, &order).await;
        let b = queue(&p, 2, &order).await;
        let c = queue(&p, 3, &order).await;
        // The queue overflows: a goes, the pool is overloaded.
        let d = spawn_job(&p, 4, &order);
        assert_eq!(a.await.unwrap(), Err(CpuError::Overloaded));
        assert!(p.overloaded());
        // b, c and d have now waited longer than the average job; the slot is still busy
        // and the queue is not full, yet the next arrival (requests still come faster than
        // slots free, on average) has them refused at once.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let e = spawn_job(&p, 5, &order);
        assert_eq!(b.await.unwrap(), Err(CpuError::Overloaded));
        assert_eq!(c.await.unwrap(), Err(CpuError::Overloaded));
        assert_eq!(d.await.unwrap(), Err(CpuError::Overloaded));
        assert_eq!(p.inner.metrics.shed.get(), 4);
        // The fresh arrival still waits for the slot and is served when it frees (jobs
        // now "take an hour", so however slow this machine is, e is not stale by then).
        p.inner.job_micros.store(3_600_000_000, Ordering::Relaxed);
        busy.free().await;
        assert_eq!(e.await.unwrap(), Ok(5));
        assert_eq!(*order.lock().unwrap(), [5]);
        assert!(p.overloaded(), "requests still come faster than slots free");
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_never_keeps_a_slot() {
        let p = pool(1, 4);
        let order = Arc::new(Mutex::new(Vec::new()));
        let busy = occupy(&p).await;
        let gone = queue(&p, 1, &order).await;
        let stays = queue(&p, 2, &order).await;
        gone.abort();
        let _ = gone.await;
        busy.free().await;
        assert_eq!(stays.await.unwrap(), Ok(2));
        assert_eq!(*order.lock().unwrap(), [2]);
        // Every slot came back: a full set of jobs runs at once again.
        let far = deadline_after(Duration::from_secs(30));
        assert_eq!(p.submit(far, |_| 9).await, Ok(9));
        assert_eq!(p.inner.lock().running, 0);
    }

    #[tokio::test]
    async fn a_waiter_past_its_deadline_gives_up() {
        let p = pool(1, 4);
        let busy = occupy(&p).await;
        let soon = deadline_after(Duration::from_millis(20));
        assert_eq!(p.submit(soon, |_| 0).await, Err(CpuError::Deadline));
        busy.free().await;
        assert_eq!(p.inner.lock().running, 0);
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
        assert_eq!(p.inner.metrics.transforms_running.get(), 0);
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

    /// Names of the threads the release hook ran on (the hook is process-wide; only this
    /// test sets it).
    static RELEASED_ON: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn record_release() {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        RELEASED_ON.lock().unwrap().push(name);
    }

    fn releases_on(name: &str) -> usize {
        RELEASED_ON
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }

    #[tokio::test]
    async fn every_thread_hands_memory_back_once_the_work_goes_quiet() {
        crate::memory::set_hooks(crate::memory::Hooks {
            release: record_release,
            settle: || {},
            resume: || {},
        });
        let threads = Threads::spawn("quiet-test", 2);
        // Both threads run a job: neither job ends before the other has started.
        let both = Arc::new(std::sync::Barrier::new(2));
        let job = |fill: u8| {
            let both = both.clone();
            move || {
                both.wait();
                vec![fill; 1 << 20].len()
            }
        };
        let (first, second) = (threads.run(job(1)), threads.run(job(2)));
        let (a, b) = tokio::join!(first, second);
        assert_eq!((a, b), (Ok(1 << 20), Ok(1 << 20)));
        // Other tests' jobs may delay the quiet moment, not prevent it.
        let give_up = std::time::Instant::now() + Duration::from_secs(60);
        while releases_on("quiet-test-0") == 0 || releases_on("quiet-test-1") == 0 {
            assert!(
                std::time::Instant::now() < give_up,
                "no release on both threads: {:?}",
                RELEASED_ON.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn threads_report_a_panicking_job() {
        let threads = Threads::spawn("panic-test", 1);
        let boom = threads.run(|| -> u32 { panic!("job panics (expected in this test)") });
        assert_eq!(boom.await, Err(CpuError::Panicked));
        assert_eq!(threads.run(|| 7).await, Ok(7));
    }
}
