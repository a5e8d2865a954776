//! The derivative builder: gives every registered or imported image its reduced copies
//! (`imaging::pyramid`), once, in the background, and removes them with the file.
//!
//! The metadata store is the queue: a file whose `derivatives` column is NULL still needs
//! them (registration, import and replacement leave it NULL). The builder claims a batch,
//! builds one file at a time on a thread of its own (so at most one core's worth of work, and
//! never on a tokio worker), stores the levels beside the original under
//! `.imgedge/d<long edge>/<key>`, records the pyramid and announces the change so every
//! node's edge starts using it. It is woken by registrations and polls every
//! `IDLE_POLL` for imports made by another process.
//!
//! Renders come first: before each file the builder waits while the CPU pool has work
//! queued (at most `MAX_DEFER`, so a permanently busy node still makes progress).
//! Claims expire after `CLAIM_TTL`, so a node that dies mid-build delays a file, never
//! loses it (with SQLite, one node, its claims are given back as soon as it restarts). Nothing is lost on failure: a storage error gives the claim back for a later
//! round; only sources that can never yield copies (undecodable, animated, gone) are
//! marked `none`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::budget::{BudgetError, MemoryBudget};
use crate::cache::Caches;
use crate::cpu::Threads;
use crate::db::{Claim, Db, Derivatives, PendingDeletion};
use crate::imaging::{self, ImagingError, Pyramid};
use crate::key::ObjectKey;
use crate::storage::{Storage, StorageError};
use crate::telemetry::Metrics;

/// What the builder works with, built once at start-up by `App::build`; the API and
/// housekeeping hold it too, to wake the builder and to remove a deleted file's copies.
#[derive(Debug)]
pub struct Builder {
    /// The long edges of the reduced copies, largest first; empty: no copies are made.
    pub sizes: Vec<u32>,
    /// Originals larger than this are not read (`max_source_bytes`).
    pub max_source_bytes: u64,
    pub storage: Storage,
    pub db: Db,
    pub caches: Caches,
    /// Builds reserve their memory from the renders' budget.
    pub memory: MemoryBudget,
    pub metrics: Arc<Metrics>,
    pub imaging_limits: imaging::Limits,
    /// Wakes the builder: a file was registered or replaced, or a copy went missing.
    pub wanted: Arc<Notify>,
}

/// Files claimed per round.
const BATCH: u32 = 16;
/// How often the builder looks for work when nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Pause after a round in which every file failed (storage or database down).
const FAILURE_PAUSE: Duration = Duration::from_secs(10);
/// A claim older than this belongs to a builder that died.
const CLAIM_TTL: Duration = Duration::from_secs(600);
/// Longest the builder yields to queued renders before building anyway.
const MAX_DEFER: Duration = Duration::from_secs(10);

/// Runs the builder until `stop` is cancelled; does nothing when derivatives are off.
pub fn spawn(builder: Arc<Builder>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if builder.sizes.is_empty() {
            return;
        }
        // One thread of its own, kept for the builder's lifetime: its allocator heap is
        // reused from file to file and handed back when the builder goes quiet (`memory`).
        let thread = Threads::spawn("imgedge-build", 1);
        match builder.db.release_orphaned_claims().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "retrying derivative builds cut short by a crash"),
            Err(e) => tracing::warn!(error = %e, "cannot release claims left by a crash"),
        }
        loop {
            let outcome = round(&builder, &thread, &stop).await;
            if stop.is_cancelled() {
                return;
            }
            let pause = match outcome {
                Round::More => continue,
                Round::Idle => IDLE_POLL,
                Round::Failing => FAILURE_PAUSE,
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = builder.wanted.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    })
}

enum Round {
    /// A full batch was handled: there may be more.
    More,
    /// Nothing (more) to do.
    Idle,
    /// Nothing could be built; wait before retrying.
    Failing,
}

/// Sets the backlog gauge from the metadata store; `false` when the store cannot answer.
async fn count_backlog(builder: &Builder) -> bool {
    match builder.db.derivative_backlog().await {
        Ok(n) => {
            builder.metrics.derivative_backlog.set(n as i64);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the derivative backlog");
            false
        }
    }
}

async fn round(builder: &Builder, thread: &Threads, stop: &CancellationToken) -> Round {
    if !count_backlog(builder).await {
        return Round::Failing;
    }
    let now = OffsetDateTime::now_utc();
    let claims = match builder
        .db
        .claim_pending_derivatives(now, now - CLAIM_TTL, BATCH)
        .await
    {
        Ok(claims) => claims,
        Err(e) => {
            tracing::warn!(error = %e, "cannot claim files for derivatives");
            return Round::Failing;
        }
    };
    if claims.is_empty() {
        return Round::Idle;
    }
    let mut progressed = false;
    for claim in &claims {
        if stop.is_cancelled() {
            let _ = builder.db.release_derivatives(claim).await;
            continue;
        }
        yield_to_renders(builder, stop).await;
        match build(builder, thread, claim, stop).await {
            Ok(()) => progressed = true,
            Err(e) => {
                builder.metrics.derivative_failures.inc();
                tracing::warn!(key = %claim.key, error = %e, "derivatives not built; will retry");
                if let Err(e) = builder.db.release_derivatives(claim).await {
                    tracing::warn!(key = %claim.key, error = %e, "could not release a claim");
                }
            }
        }
    }
    count_backlog(builder).await;
    match (progressed, claims.len() as u32 == BATCH) {
        (false, _) => Round::Failing,
        (true, true) => Round::More,
        (true, false) => Round::Idle,
    }
}

/// Waits while renders are queued for the CPU, at most `MAX_DEFER`.
async fn yield_to_renders(builder: &Builder, stop: &CancellationToken) {
    let started = tokio::time::Instant::now();
    while builder.metrics.queue_depth.get() > 0 && started.elapsed() < MAX_DEFER {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// A failure worth retrying later (the claim is given back).
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("metadata store: {0}")]
    Db(#[from] crate::db::DbError),
    #[error("stopped")]
    Stopped,
}

async fn build(
    builder: &Builder,
    thread: &Threads,
    claim: &Claim,
    stop: &CancellationToken,
) -> Result<(), Transient> {
    let key = &claim.key;
    let started = std::time::Instant::now();
    let bytes = match builder.storage.get(key, builder.max_source_bytes).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound | StorageError::TooLarge { .. }) => {
            return finish(builder, claim, &Derivatives::Never).await;
        }
        Err(e) => return Err(e.into()),
    };
    let sizes = builder.sizes.clone();
    let limits = builder.imaging_limits.clone();
    // The build's memory comes from the renders' budget: a file that could never fit gets
    // no reduced copies (its renders are refused as well); otherwise wait for room,
    // however long, as nobody waits for the builder.
    let need = imaging::pyramid_memory_need(&bytes, &sizes, &limits).unwrap_or(0);
    let until = tokio::time::Instant::now() + Duration::from_secs(24 * 3600);
    let reserved = tokio::select! {
        reserved = builder.memory.reserve(need, until) => reserved,
        _ = stop.cancelled() => return Err(Transient::Stopped),
    };
    let memory = match reserved {
        Ok(memory) => memory,
        Err(BudgetError::Busy) => return Err(Transient::Stopped),
        Err(e @ BudgetError::TooLarge { .. }) => {
            tracing::info!(key = %key, error = %e, "no derivatives for this file");
            return finish(builder, claim, &Derivatives::Never).await;
        }
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let work = thread.run(move || {
        let built = imaging::build_pyramid(&bytes, &sizes, &limits, &flag);
        drop(bytes);
        crate::budget::settle(memory);
        built
    });
    let built = tokio::select! {
        done = work => done.unwrap_or_else(|e| Err(ImagingError::Undecodable(format!("builder: {e}")))),
        _ = stop.cancelled() => {
            cancel.store(true, Ordering::Relaxed);
            return Err(Transient::Stopped);
        }
    };
    let (pyramid, levels) = match built {
        Ok(Some(built)) => built,
        Ok(None) => return finish(builder, claim, &Derivatives::Never).await,
        Err(ImagingError::Cancelled) => return Err(Transient::Stopped),
        Err(e) => {
            tracing::info!(key = %key, error = %e, "no derivatives for this file");
            return finish(builder, claim, &Derivatives::Never).await;
        }
    };
    let stored_bytes: usize = levels.iter().map(|l| l.bytes.len()).sum();
    // Should this node die between storing the copies and recording them, while the file
    // is deleted elsewhere, the guard has housekeeping take them away.
    builder.db.guard_copies(key).await?;
    for level in levels {
        let at = key.derivative(Pyramid::long_edge(level.size));
        builder.storage.put(&at, level.bytes.into()).await?;
    }
    let recorded = builder
        .db
        .finish_derivatives(claim, &Derivatives::Built(pyramid.clone()))
        .await?;
    if !recorded {
        // The file was replaced or deleted while we worked. Replaced: a later round builds
        // again (and overwrites). Deleted: take the copies away again.
        // (If they cannot be removed now, the guard stays for housekeeping.)
        let deleted = builder.db.edge_facts(key).await?.is_none();
        if !deleted || remove(builder, key, Some(&pyramid)).await {
            builder.db.release_copies_guard(key).await?;
        }
        return Ok(());
    }
    builder.db.release_copies_guard(key).await?;
    builder.caches.purge(key).await;
    // A replaced file may have had larger levels than its new content gives: they are no
    // longer recorded, so nothing reads them; take them away.
    remove_levels(builder, key, |size| {
        !pyramid
            .levels
            .iter()
            .any(|&l| Pyramid::long_edge(l) == size)
    })
    .await;
    builder.metrics.derivatives_built.inc();
    tracing::info!(
        key = %key,
        pyramid = %pyramid,
        bytes = stored_bytes,
        ms = started.elapsed().as_millis() as u64,
        "built derivatives"
    );
    Ok(())
}

async fn finish(builder: &Builder, claim: &Claim, outcome: &Derivatives) -> Result<(), Transient> {
    if builder.db.finish_derivatives(claim, outcome).await? {
        builder.metrics.derivatives_built.inc();
    }
    Ok(())
}

/// Deletes `key`'s reduced copies: the recorded levels and every configured size (a build
/// may have stored some before it was recorded). Best effort: failures are logged; returns
/// whether every removal succeeded.
pub async fn remove(builder: &Builder, key: &ObjectKey, pyramid: Option<&Pyramid>) -> bool {
    let recorded: Vec<u32> = pyramid
        .map(|p| p.levels.iter().map(|&l| Pyramid::long_edge(l)).collect())
        .unwrap_or_default();
    remove_levels_of(builder, key, recorded, |_| true).await
}

/// Deletes the configured sizes of `key`'s reduced copies for which `stale` holds.
async fn remove_levels(builder: &Builder, key: &ObjectKey, stale: impl Fn(u32) -> bool) -> bool {
    remove_levels_of(builder, key, Vec::new(), stale).await
}

async fn remove_levels_of(
    builder: &Builder,
    key: &ObjectKey,
    mut sizes: Vec<u32>,
    stale: impl Fn(u32) -> bool,
) -> bool {
    sizes.extend(&builder.sizes);
    sizes.sort_unstable();
    sizes.dedup();
    let mut clean = true;
    for size in sizes.into_iter().filter(|&s| stale(s)) {
        let at = key.derivative(size);
        match builder.storage.delete(&at).await {
            Ok(()) | Err(StorageError::NotFound) => {}
            Err(e) => {
                tracing::warn!(key = %at, error = %e, "could not delete a reduced copy");
                clean = false;
            }
        }
    }
    clean
}

/// How `finish_deletion` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The objects are gone and so is the outbox entry.
    Removed,
    /// The key belongs to a file (registered again, or a build's guard of a live file):
    /// its objects stay; the entry is gone.
    Kept,
    /// Something failed; the entry stays for housekeeping.
    Failed,
}

/// Removes the objects of a deleted file (its original and reduced copies) and then its
/// entry in the deletion outbox. A key registered again since keeps its objects (they
/// belong to the new file now). Whatever fails stays in the outbox for housekeeping.
pub async fn finish_deletion(builder: &Builder, pending: &PendingDeletion) -> Deletion {
    let key = &pending.key;
    match builder.db.edge_facts(key).await {
        Ok(None) => {}
        Ok(Some(_)) if forget(builder, key).await => return Deletion::Kept,
        Ok(Some(_)) => return Deletion::Failed,
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "deletion left for later");
            return Deletion::Failed;
        }
    }
    if let Err(e) = builder.storage.delete(key).await {
        tracing::warn!(key = %key, error = %e, "could not delete a file's object; will retry");
        return Deletion::Failed;
    }
    if remove(builder, key, pending.pyramid.as_ref()).await && forget(builder, key).await {
        Deletion::Removed
    } else {
        Deletion::Failed
    }
}

async fn forget(builder: &Builder, key: &ObjectKey) -> bool {
    match builder.db.forget_deletion(key).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "deletion done but not recorded; will repeat");
            false
        }
    }
}
