//! imgedge: an image-optimization CDN edge (Thumbor-style URLs) with a companion storage API.
//!
//! Code map, in reading order (see ARCHITECTURE.md for the invariants):
//! - `config`: typed settings; the only reader of the environment.
//! - `app`: shared handles built once (storage, db, caches, CPU pool, policies).
//! - `server`: hyper accept loops, connection limits, graceful shutdown.
//! - `edge`: the CDN data path (`url` parsing, `access`, `negotiate`, `respond`).
//! - `api`: the API listener: the storage API, presigned local-store endpoints, health,
//!   readiness, metrics.
//! - `housekeeping`: sweeping uploads that were issued but never registered.
//! - `derivatives`: building each image's reduced copies in the background.
//! - `cluster`: applying other nodes' change announcements to this node's caches.
//! - `imaging`: synchronous decode → geometry → resize → filters → encode.
//! - `cpu`: the only async → CPU bridge (bounded, queued, cancellable).
//! - `memory`: handing the allocator's memory back once the heavy work goes quiet.
//! - `cache`: moka caches for variants, originals and visibility.
//! - `storage`: object storage backends. `db`: the metadata store (the only SQL).
//! - `import`: registering existing image trees. `error`: failure → HTTP status.
//! - `telemetry`: logs and Prometheus metrics.

// No `unsafe` anywhere but `imaging::webp_anim` (libwebp's animation encoder, which no safe
// binding drives correctly; the module says why), where it is allowed explicitly.
#![deny(unsafe_code)]

pub mod api;
pub mod app;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod check;
pub mod cluster;
pub mod config;
pub mod cpu;
pub mod db;
pub mod demo;
pub mod derivatives;
pub mod edge;
pub mod error;
pub mod housekeeping;
pub mod http_body;
pub mod imaging;
pub mod import;
pub mod key;
pub mod memory;
pub mod secret;
pub mod server;
pub mod storage;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use app::{App, StartError};
pub use config::Config;

/// The two bound listeners. The binary binds them from the configuration; tests bind
/// `127.0.0.1:0`.
#[derive(Debug)]
pub struct Listeners {
    pub cdn: TcpListener,
    pub api: TcpListener,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Listeners, StartError> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Listeners {
            cdn: bind(config.cdn_addr).await?,
            api: bind(config.api_addr).await?,
        })
    }
}

/// Serves an already-built application until `shutdown` completes, then drains both
/// listeners (at most `shutdown_grace_ms`) and closes the metadata store.
pub async fn serve(app: Arc<App>, listeners: Listeners, shutdown: impl Future<Output = ()>) {
    let token = CancellationToken::new();
    let cdn = tokio::spawn(server::serve(
        listeners.cdn,
        server::Role::Cdn,
        app.clone(),
        token.clone(),
    ));
    let api = tokio::spawn(server::serve(
        listeners.api,
        server::Role::Api,
        app.clone(),
        token.clone(),
    ));
    let sweeper = housekeeping::spawn(app.clone(), token.clone());
    let listener = cluster::spawn(app.clone(), token.clone());
    let builder = derivatives::spawn(app.builder.clone(), token.clone());
    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    app.draining.store(true, Ordering::Relaxed);
    token.cancel();
    let _ = tokio::join!(cdn, api, sweeper, listener, builder);
    app.db.close().await;
    tracing::info!("stopped");
}
