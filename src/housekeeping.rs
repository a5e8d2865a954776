//! Background housekeeping, so storage does not fill with orphans:
//! - uploads that were presigned (or multipart-initiated) but never registered are removed
//!   after `upload_ttl_secs`, with their objects and parts;
//! - deletions that a node did not finish (it failed, or died between deleting a file's row
//!   and its objects) are finished from the outbox after `DELETION_GRACE`;
//! - the local store's temporary files left by processes that died are removed, and so are
//!   multipart parts that can no longer be completed (their file registered or deleted, or
//!   their grant gone) once idle for `PARTS_IDLE`.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::db::DbError;
use crate::derivatives::Deletion;
use crate::storage::Storage;

/// Grants handled per database round trip.
const BATCH: u32 = 200;

/// How long a deletion may stay in the outbox before housekeeping takes it over (the node
/// that asked normally finishes within milliseconds).
const DELETION_GRACE: time::Duration = time::Duration::seconds(60);

/// How long a multipart upload's parts must have been left alone before housekeeping
/// looks at them (a new upload's directory exists a moment before its grant).
const PARTS_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub uploads: usize,
    pub multipart: usize,
    /// Deleted files whose objects were removed from the outbox (entries of keys that
    /// belong to a file again are dropped without counting).
    pub deletions: usize,
    /// Temporary files (or directories) of dead processes, and parts of multipart uploads
    /// that can no longer be completed.
    pub temporary: usize,
}

/// Removes every grant older than the TTL at `now` that was never registered, finishes
/// deletions older than `DELETION_GRACE`, and removes dead processes' temporary files.
pub async fn sweep(app: &App, now: OffsetDateTime) -> Result<SweepReport, DbError> {
    let mut report = SweepReport {
        temporary: app.storage.sweep_temporary().await,
        ..SweepReport::default()
    };
    for upload_id in app.storage.idle_multipart(PARTS_IDLE).await {
        if !app.db.multipart_open(&upload_id).await?
            && let Storage::Fs(fs, _) = &app.storage
            && fs.abort_multipart(&upload_id).await.is_ok()
        {
            report.temporary += 1;
        }
    }
    loop {
        let pending = app
            .db
            .pending_deletions(now - DELETION_GRACE, BATCH)
            .await?;
        let batch = pending.len();
        let mut done = 0;
        for deletion in &pending {
            match crate::derivatives::finish_deletion(&app.builder, deletion).await {
                Deletion::Removed => {
                    report.deletions += 1;
                    done += 1;
                }
                Deletion::Kept => done += 1,
                Deletion::Failed => {}
            }
        }
        // Stop at a short batch, or when nothing could be finished (storage down).
        if batch < BATCH as usize || done == 0 {
            break;
        }
    }
    sweep_uploads(app, now, report).await
}

async fn sweep_uploads(
    app: &App,
    now: OffsetDateTime,
    mut report: SweepReport,
) -> Result<SweepReport, DbError> {
    let ttl =
        time::Duration::seconds(i64::try_from(app.config.upload_ttl_secs).unwrap_or(i64::MAX));
    let cutoff = now - ttl;
    loop {
        let stale = app.db.stale_uploads(cutoff, BATCH).await?;
        if stale.is_empty() {
            return Ok(report);
        }
        for grant in stale {
            // A registered file (via another path) keeps its object.
            let registered = app.db.find_by_key(&grant.key).await?.is_some();
            if let Some(upload_id) = &grant.multipart_id {
                if let Err(e) = app.storage.abort_multipart(&grant.key, upload_id).await {
                    tracing::warn!(key = %grant.key, error = %e, "could not drop parts");
                }
                report.multipart += 1;
            }
            if !registered && let Err(e) = app.storage.delete(&grant.key).await {
                tracing::warn!(key = %grant.key, error = %e, "could not remove orphan object");
                continue;
            }
            app.db.delete_upload(&grant.key).await?;
            report.uploads += 1;
        }
    }
}

/// Runs `sweep` every `housekeeping_interval_secs` until `stop` is cancelled.
pub fn spawn(app: Arc<App>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_secs(app.config.housekeeping_interval_secs);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match sweep(&app, OffsetDateTime::now_utc()).await {
                Ok(r) if r != SweepReport::default() => {
                    tracing::info!(
                        uploads = r.uploads,
                        multipart = r.multipart,
                        deletions = r.deletions,
                        temporary = r.temporary,
                        "swept orphans"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upload sweep failed"),
            }
        }
    })
}
