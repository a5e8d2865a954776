//! Background housekeeping: uploads that were presigned (or multipart-initiated) but never
//! registered are removed after `upload_ttl_secs`, with their objects and parts, so storage
//! does not fill with orphans.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::db::DbError;

/// Grants handled per database round trip.
const BATCH: u32 = 200;

/// What one sweep removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub uploads: usize,
    pub multipart: usize,
}

/// Removes every grant older than the TTL at `now` that was never registered.
pub async fn sweep(app: &App, now: OffsetDateTime) -> Result<SweepReport, DbError> {
    let ttl =
        time::Duration::seconds(i64::try_from(app.config.upload_ttl_secs).unwrap_or(i64::MAX));
    let cutoff = now - ttl;
    let mut report = SweepReport::default();
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
                Ok(r) if r.uploads > 0 => {
                    tracing::info!(
                        uploads = r.uploads,
                        multipart = r.multipart,
                        "swept abandoned uploads"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "upload sweep failed"),
            }
        }
    })
}
