//! Several nodes over one PostgreSQL database: every change to a file's visibility or
//! existence is announced with `NOTIFY` (see `db`), and each node listens and purges its
//! caches for the announced key at once. If the listening connection drops, announcements
//! in the gap are lost, so the node forgets every cached visibility when it notices and
//! reconnects; the visibility cache's TTL (`visibility_ttl_ms`) bounds staleness even if an
//! announcement is never delivered. Nothing node-local is needed for correctness.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::db::PurgeEvent;

/// Pause between attempts to re-establish a failed subscription.
const RETRY: Duration = Duration::from_secs(1);

/// Listens for change announcements until `stop` is cancelled; returns at once with
/// SQLite (one node).
pub fn spawn(app: Arc<App>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut listener = loop {
            let attempt = tokio::select! {
                () = stop.cancelled() => return,
                attempt = app.db.purge_listener() => attempt,
            };
            match attempt {
                Ok(Some(listener)) => break listener,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to change announcements; retrying");
                    app.caches.forget_all_visibility();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        };
        tracing::info!("listening for other nodes' changes");
        loop {
            let event = tokio::select! {
                () = stop.cancelled() => return,
                event = listener.next() => event,
            };
            match event {
                Ok(PurgeEvent::Changed(key)) => {
                    tracing::debug!(key = %key, "purging after a change on another node");
                    app.metrics.remote_purges.inc();
                    app.caches.purge(&key).await;
                }
                Ok(PurgeEvent::Lost) => {
                    tracing::warn!(
                        "change announcements interrupted; forgetting cached visibility"
                    );
                    app.caches.forget_all_visibility();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change announcements unavailable; retrying");
                    app.caches.forget_all_visibility();
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    })
}
