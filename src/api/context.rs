//! What the storage API works with: its handles, the credentials it checks, and its
//! settings, built once at start-up by `App::build`. Handlers receive an [`Api`] and
//! nothing else.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::auth::{JwtVerifier, KeyRing};
use crate::cache::Caches;
use crate::config::Config;
use crate::db::Db;
use crate::derivatives::Builder;
use crate::edge::access::Signing;
use crate::storage::{BodyPace, Storage};
use crate::telemetry::Metrics;

#[derive(Debug)]
pub struct Api {
    pub settings: Settings,
    pub storage: Storage,
    pub db: Db,
    /// Purged when a file changes, so the edge stops serving the old state at once.
    pub caches: Caches,
    pub metrics: Arc<Metrics>,
    /// API keys by hash, and the bearer-token verifier when one is configured.
    pub keys: KeyRing,
    pub jwt: Option<JwtVerifier>,
    /// The edge's URL signing: the playground prints signed URLs with it when allowed.
    pub signing: Signing,
    /// Woken on registration; removes a deleted file's reduced copies.
    pub builder: Arc<Builder>,
    /// Set at shutdown: `/readyz` answers 503.
    pub draining: Arc<AtomicBool>,
}

/// The configuration the API reads per request, parsed once.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The bucket named in requests (`bucket` must match it when given).
    pub bucket: String,
    pub cdn_base_url: String,
    pub max_source_bytes: u64,
    pub max_output_side: u32,
    pub max_image_bytes: u64,
    pub max_media_bytes: u64,
    pub max_document_bytes: u64,
    /// How fast upload bodies to the local store must arrive.
    pub body_pace: BodyPace,
    pub playground: bool,
    /// The playground may sign URLs with the server's key (on, and a key is configured).
    pub playground_signs: bool,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            bucket: config.bucket.clone(),
            cdn_base_url: config.cdn_base_url(),
            max_source_bytes: config.max_source_bytes,
            max_output_side: config.max_output_side,
            max_image_bytes: config.max_image_bytes,
            max_media_bytes: config.max_media_bytes,
            max_document_bytes: config.max_document_bytes,
            body_pace: config.body_pace(),
            playground: config.playground,
            playground_signs: config.playground_signing && !config.security_key.is_empty(),
        }
    }
}
