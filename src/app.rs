//! Everything the process holds, built once at start-up: configuration, storage, metadata
//! store, caches, metrics, and one context per surface (the edge, the storage API, the
//! derivative builder), each with only its own handles and its settings already parsed.
//! The listeners hand each request its surface's context; housekeeping, the cluster
//! listener and the command-line tasks use the shared handles here.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::Notify;

use crate::api::Api;
use crate::budget::MemoryBudget;
use crate::cache::{CacheSizes, Caches};
use crate::config::{Config, Credentials, StorageKind};
use crate::cpu::CpuPool;
use crate::db::{Db, DbError};
use crate::derivatives::Builder;
use crate::edge::Edge;
use crate::edge::access::Signing;
use crate::edge::negotiate::Policy;
use crate::imaging::{self, DecodeShare};
use crate::storage::presign::LocalSigner;
use crate::storage::{FsStorage, S3Storage, Storage, StorageError};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open storage at {path}: {source}")]
    StorageOpen {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("storage is not usable: {0}")]
    Storage(#[from] StorageError),
    #[error("cannot open metadata store {url}: {source}")]
    Db { url: String, source: DbError },
    #[error("invalid authentication settings: {0}")]
    Auth(String),
    #[error("cannot read or create the storage signing key {path}: {source}")]
    SigningKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub storage: Storage,
    pub db: Db,
    pub caches: Caches,
    pub metrics: Arc<Metrics>,
    /// Set at shutdown: `/readyz` fails and responses ask clients to close.
    pub draining: Arc<AtomicBool>,
    /// The CDN listener's context: its handles and settings.
    pub edge: Edge,
    /// The derivative builder's context (the API and housekeeping use it too).
    pub builder: Arc<Builder>,
    /// The storage API listener's context: its handles, credentials and settings.
    pub api: Api,
}

impl App {
    /// Opens storage and the metadata store (running migrations) and builds every handle.
    pub async fn build(config: Config) -> Result<App, StartError> {
        let storage = match config.storage {
            StorageKind::Fs => {
                let path = config.data_dir.join("objects");
                let fs = FsStorage::open(&path)
                    .map_err(|source| StartError::StorageOpen { path, source })?;
                let signer = LocalSigner::new(signing_secret(&config)?, &config.api_base_url());
                Storage::Fs(fs, signer)
            }
            StorageKind::S3 => Storage::S3(S3Storage::connect(&config.s3_settings()).await),
        };
        storage.check().await?;
        let url = config.database_url();
        if let Some(parent) = url
            .strip_prefix("sqlite://")
            .and_then(|path| std::path::Path::new(path).parent())
        {
            std::fs::create_dir_all(parent).map_err(|source| StartError::StorageOpen {
                path: parent.to_owned(),
                source,
            })?;
        }
        let db = Db::open(&url)
            .await
            .map_err(|source| StartError::Db { url, source })?;
        let metrics = Arc::new(Metrics::new());
        let caches = Caches::new(CacheSizes {
            variant_bytes: config.variant_cache_bytes,
            variant_ttl: Duration::from_secs(config.variant_cache_ttl_secs),
            original_bytes: config.original_cache_capacity(),
            visibility_ttl: Duration::from_millis(config.visibility_ttl_ms),
        });
        let cpu = CpuPool::new(
            config.transform_concurrency(),
            config.queue_length,
            metrics.clone(),
        );
        let memory = MemoryBudget::new(config.memory_budget(), metrics.clone());
        let signing = Signing::new(&config.security_key, config.require_signature);
        let negotiation = Policy {
            auto_webp: config.auto_webp,
            auto_avif: config.auto_avif,
        };
        let imaging_limits = imaging::Limits {
            max_source_pixels: config.max_source_pixels,
            max_output_side: config.max_output_side,
            max_animation_pixels: config.max_animation_pixels,
        };
        let Credentials { keys, jwt } = config
            .credentials()
            .map_err(|e| StartError::Auth(e.to_string()))?;
        let decodes = Arc::new(DecodeShare::new(
            metrics.decodes.clone(),
            metrics.decodes_shared.clone(),
        ));
        let builder = Arc::new(Builder {
            sizes: config.derivative_sizes(),
            max_source_bytes: config.max_source_bytes,
            storage: storage.clone(),
            db: db.clone(),
            caches: caches.clone(),
            memory: memory.clone(),
            metrics: metrics.clone(),
            imaging_limits: imaging_limits.clone(),
            wanted: Arc::new(Notify::new()),
        });
        let edge = Edge {
            settings: crate::edge::Settings::from_config(&config),
            storage: storage.clone(),
            db: db.clone(),
            caches: caches.clone(),
            cpu,
            memory,
            metrics: metrics.clone(),
            signing: signing.clone(),
            negotiation,
            imaging_limits,
            decodes,
            derivatives_wanted: builder.wanted.clone(),
        };
        let draining = Arc::new(AtomicBool::new(false));
        let api = Api {
            settings: crate::api::Settings::from_config(&config),
            storage: storage.clone(),
            db: db.clone(),
            caches: caches.clone(),
            metrics: metrics.clone(),
            keys,
            jwt,
            signing,
            builder: builder.clone(),
            draining: draining.clone(),
        };
        Ok(App {
            edge,
            api,
            config,
            storage,
            db,
            caches,
            metrics,
            draining,
            builder,
        })
    }
}

/// The configured storage signing secret, or the one kept in the data directory (created,
/// readable by the owner only, on first start).
fn signing_secret(config: &Config) -> Result<Vec<u8>, StartError> {
    if !config.storage_signing_secret.is_empty() {
        return Ok(config.storage_signing_secret.as_bytes().to_vec());
    }
    let path = config.data_dir.join("storage-signing.key");
    let fail = |source| StartError::SigningKey {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| fail(std::io::Error::other(e.to_string())))?;
    let hex = hex::encode(secret);
    std::fs::create_dir_all(&config.data_dir).map_err(fail)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, hex.as_bytes()).map_err(fail)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    }
    std::fs::rename(&tmp, &path).map_err(fail)?;
    Ok(hex.into_bytes())
}
