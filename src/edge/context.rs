//! What the edge works with: its handles and its settings, built once at start-up by
//! `App::build`. Handlers receive an [`Edge`] and nothing else: they never see the API's
//! credentials or the whole configuration, and read settings already parsed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::budget::MemoryBudget;
use crate::cache::Caches;
use crate::config::Config;
use crate::cpu::CpuPool;
use crate::db::Db;
use crate::edge::access::Signing;
use crate::edge::negotiate::Policy;
use crate::imaging::auto_quality::AutoTarget;
use crate::imaging::{self, DecodeShare, Quality, Tuning};
use crate::storage::Storage;
use crate::telemetry::Metrics;

/// The edge's handles (shared with the rest of the process, cheap to clone) and settings.
#[derive(Debug)]
pub struct Edge {
    pub settings: Settings,
    pub storage: Storage,
    pub db: Db,
    pub caches: Caches,
    pub cpu: CpuPool,
    /// What renders reserve memory from.
    pub memory: MemoryBudget,
    pub metrics: Arc<Metrics>,
    pub signing: Signing,
    pub negotiation: Policy,
    pub imaging_limits: imaging::Limits,
    /// One decode for concurrent renders of the same source.
    pub decodes: Arc<DecodeShare>,
    /// Wakes the derivative builder (a reduced copy went missing).
    pub derivatives_wanted: Arc<Notify>,
}

/// The configuration the edge reads per request, parsed once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub request_deadline: Duration,
    pub storage_timeout: Duration,
    pub max_output_side: u32,
    pub max_source_bytes: u64,
    pub client_hints: bool,
    pub cache_max_age_secs: u32,
    /// Used when a URL has no `quality(...)`.
    pub default_quality: Quality,
    pub auto_quality_target: AutoTarget,
    pub tuning: Tuning,
    /// Reduced copies are built, so renders may start from one.
    pub derivatives: bool,
    pub cdn_base_url: String,
    pub api_base_url: String,
    /// The API serves the playground (the landing page points to it).
    pub playground: bool,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        Settings {
            request_deadline: config.request_deadline(),
            storage_timeout: config.storage_timeout(),
            max_output_side: config.max_output_side,
            max_source_bytes: config.max_source_bytes,
            client_hints: config.client_hints,
            cache_max_age_secs: config.cache_max_age_secs,
            default_quality: config.default_quality,
            auto_quality_target: AutoTarget {
                jpeg: config.auto_quality_target,
                webp: config.auto_quality_target_webp,
            },
            tuning: Tuning {
                webp_sharp_yuv: config.webp_sharp_yuv,
            },
            derivatives: config.derivatives_enabled(),
            cdn_base_url: config.cdn_base_url(),
            api_base_url: config.api_base_url(),
            playground: config.playground,
        }
    }
}
