//! The typed configuration tree and the only place that reads the environment.
//!
//! Precedence, lowest to highest: built-in defaults < TOML file (`--config`) <
//! `IMGEDGE_*` environment variables < command-line flags. Every setting is a flat key:
//! `variant_cache_bytes` in TOML is `IMGEDGE_VARIANT_CACHE_BYTES` in the environment.
//! `Config::load` takes the environment as a map so tests can fill it without touching
//! the process environment. Invalid configuration is refused with a message naming the
//! setting; nothing downstream re-validates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::auth::{JwtVerifier, KeyRing};
use crate::imaging::{Quality, auto_quality};
pub use crate::secret::Secret;
pub use crate::telemetry::LogFormat;

const ENV_PREFIX: &str = "IMGEDGE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown setting {name} (see README, section Configuration)")]
    UnknownSetting { name: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A capacity in bytes, or `auto`: a default that depends on other settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoBytes {
    Auto,
    Bytes(u64),
}

impl FromStr for AutoBytes {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AutoBytes::Auto),
            n => n
                .parse()
                .map(AutoBytes::Bytes)
                .map_err(|_| "expected a number of bytes or `auto`".to_owned()),
        }
    }
}

impl Serialize for AutoBytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            AutoBytes::Auto => serializer.serialize_str("auto"),
            AutoBytes::Bytes(n) => serializer.serialize_u64(*n),
        }
    }
}

/// Which object store holds the originals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A local directory, `<data_dir>/objects` (one node).
    Fs,
    /// An S3-compatible bucket (`s3_*` settings), shared by any number of nodes.
    S3,
}

impl FromStr for StorageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fs" | "local" => Ok(StorageKind::Fs),
            "s3" => Ok(StorageKind::S3),
            other => Err(format!("unknown storage `{other}`, expected `fs` or `s3`")),
        }
    }
}

/// Every setting of the service. Field names are the TOML keys; upper-cased with the
/// `IMGEDGE_` prefix they are the environment variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// CDN (image edge) listener.
    #[serde(deserialize_with = "flex")]
    pub cdn_addr: SocketAddr,
    /// Storage API + health + metrics listener.
    #[serde(deserialize_with = "flex")]
    pub api_addr: SocketAddr,
    /// Root of embedded state: SQLite database and local object storage.
    pub data_dir: PathBuf,
    /// Metadata store URL: `sqlite://path` or `postgres://user:pass@host/db`; empty means
    /// `sqlite://<data_dir>/imgedge.db`.
    pub database_url: String,
    /// Object store: `fs` (local directory) or `s3`.
    #[serde(deserialize_with = "flex")]
    pub storage: StorageKind,
    /// S3 endpoint URL (MinIO, Ceph, R2, s3s…); empty means AWS's regional endpoint.
    pub s3_endpoint: String,
    /// Endpoint that presigned URLs are signed for, when clients reach the store under
    /// another name than the nodes do; empty means `s3_endpoint`.
    pub s3_public_endpoint: String,
    /// Bucket holding the originals (required with `storage = "s3"`).
    pub s3_bucket: String,
    /// Region; empty means the AWS chain's region, else `us-east-1`.
    pub s3_region: String,
    /// Key prefix inside the bucket (`tenant-a/`); empty for none.
    pub s3_prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), as most self-hosted stores want.
    #[serde(deserialize_with = "flex")]
    pub s3_path_style: bool,
    /// Static credentials; empty means the standard AWS chain (`AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`, profiles, web identity, instance metadata).
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    /// Connect timeout towards S3, in milliseconds.
    #[serde(deserialize_with = "flex")]
    pub s3_connect_timeout_ms: u64,
    /// Thumbor security key; empty disables signature checking.
    pub security_key: Secret,
    /// Refuse unsigned (bare or `unsafe/`) URLs.
    #[serde(deserialize_with = "flex")]
    pub require_signature: bool,
    /// Read the browser's client hints (`Sec-CH-DPR`, `Sec-CH-Width`,
    /// `Sec-CH-Viewport-Width`) for URLs with `filters:dpr()`, answer with `Accept-CH`, and
    /// name the hints a response depended on in `Vary`. Off: `dpr()` means a ratio of 1.
    #[serde(deserialize_with = "flex")]
    pub client_hints: bool,
    /// Serve the playground page (`GET /playground` on the API listener).
    #[serde(deserialize_with = "flex")]
    pub playground: bool,
    /// Let the playground show signed URLs (signed by the server; the key is never sent).
    #[serde(deserialize_with = "flex")]
    pub playground_signing: bool,
    /// Largest original accepted, in bytes (413 beyond).
    #[serde(deserialize_with = "flex")]
    pub max_source_bytes: u64,
    /// Largest original accepted, in pixels, checked from the header (422 beyond).
    #[serde(deserialize_with = "flex")]
    pub max_source_pixels: u64,
    /// Largest output side in pixels (400 beyond).
    #[serde(deserialize_with = "flex")]
    pub max_output_side: u32,
    /// Frame budget of animated outputs: `frames * output width * output height`. An
    /// animation over it is served as its first frame.
    #[serde(deserialize_with = "flex")]
    pub max_animation_pixels: u64,
    /// Memory that renders and derivative builds may hold at once, reserved from their
    /// headers before decoding (see `budget.rs`): work that does not fit waits, then gets
    /// 503; a render needing more than all of it gets 422. `auto` (the default): an eighth
    /// of the machine's (or cgroup's) memory, between 64 MiB and 128 MiB.
    #[serde(deserialize_with = "flex")]
    pub memory_budget_bytes: AutoBytes,
    /// Concurrent transforms; 0 means the number of cores.
    #[serde(deserialize_with = "flex")]
    pub transform_concurrency: usize,
    /// Transforms allowed to wait for a CPU slot. When one more arrives, the oldest waiter
    /// gets 503 and, while requests arrive faster than slots free, the newest are served
    /// first and stale waiters refused (see `cpu.rs`).
    #[serde(deserialize_with = "flex")]
    pub queue_length: usize,
    /// Whole-request deadline for a transform, in milliseconds (504 beyond).
    #[serde(deserialize_with = "flex")]
    pub request_deadline_ms: u64,
    /// Storage read timeout, in milliseconds (504 beyond).
    #[serde(deserialize_with = "flex")]
    pub storage_timeout_ms: u64,
    /// Variant cache capacity in bytes; 0 turns the cache off.
    #[serde(deserialize_with = "flex")]
    pub variant_cache_bytes: u64,
    /// Variant time to live in seconds.
    #[serde(deserialize_with = "flex")]
    pub variant_cache_ttl_secs: u64,
    /// Originals cache capacity in bytes; 0 turns it off. `auto` (the default): 64 MiB in
    /// front of S3, off for the fs backend (see `original_cache_capacity`).
    #[serde(deserialize_with = "flex")]
    pub original_cache_bytes: AutoBytes,
    /// Long edges, in pixels, of the reduced copies (derivatives) built in the background
    /// for every registered or imported image, comma-separated (e.g. `2560,1800,640`). The edge
    /// renders from the smallest one still at least twice the output size. Empty turns
    /// derivatives off: none are built and existing ones are not used.
    pub derivative_sizes: String,
    /// How long a visibility lookup may be reused, in milliseconds. Changes made through
    /// this node purge it at once; this bounds how stale other nodes can be.
    #[serde(deserialize_with = "flex")]
    pub visibility_ttl_ms: u64,
    /// `Cache-Control: public, max-age=` for images (the `max_age` filter may lower it).
    #[serde(deserialize_with = "flex")]
    pub cache_max_age_secs: u32,
    /// JPEG/WebP/AVIF quality when the URL gives none: 1..=100, or `auto` (per image, the
    /// lowest quality that reaches `auto_quality_target`).
    #[serde(deserialize_with = "flex_quality")]
    pub default_quality: Quality,
    /// The SSIMULACRA2 score `quality(auto)` aims for in JPEG (and AVIF) output, 30..=90.
    /// The default, 79, keeps every bench photo at or above the worst one sharp's fixed
    /// quality 80 gives.
    #[serde(deserialize_with = "flex")]
    pub auto_quality_target: f64,
    /// The same for WebP output (default 72: WebP's q80 is a lower level).
    #[serde(deserialize_with = "flex")]
    pub auto_quality_target_webp: f64,
    /// Choose WebP automatically when the client's Accept allows it.
    #[serde(deserialize_with = "flex")]
    pub auto_webp: bool,
    /// Choose AVIF automatically when Accept allows it (slow to encode: off by default).
    #[serde(deserialize_with = "flex")]
    pub auto_avif: bool,
    /// Still WebP output with libwebp's sharp RGB to YUV conversion: fewer bytes at equal
    /// SSIMULACRA2 (0.91-0.96x on the bench photos) for 1.45x the WebP encode time.
    #[serde(deserialize_with = "flex")]
    pub webp_sharp_yuv: bool,
    /// Grace period for draining in-flight requests at shutdown, in milliseconds.
    #[serde(deserialize_with = "flex")]
    pub shutdown_grace_ms: u64,
    /// Maximum concurrent connections per listener.
    #[serde(deserialize_with = "flex")]
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes: 431 beyond (HTTP/1.1;
    /// HTTP/2 header lists are held to the same size).
    #[serde(deserialize_with = "flex")]
    pub max_header_bytes: usize,
    /// How long a client has to send a request head, and how long an idle keep-alive
    /// connection is kept open waiting for the next one, in milliseconds.
    #[serde(deserialize_with = "flex")]
    pub header_timeout_ms: u64,
    /// Time a request body (an upload to the local store) may take before `body_min_rate`
    /// applies, in milliseconds.
    #[serde(deserialize_with = "flex")]
    pub body_timeout_ms: u64,
    /// Slowest average rate, in bytes per second, at which a request body must arrive
    /// after `body_timeout_ms`: a body is refused with 408 once it has taken longer than
    /// `body_timeout_ms` plus one second per `body_min_rate` bytes received.
    #[serde(deserialize_with = "flex")]
    pub body_min_rate: u64,
    #[serde(deserialize_with = "flex")]
    pub log_format: LogFormat,
    /// Public base URL of the CDN, used in printed links (demo mode, API `cdnUrl`).
    pub public_cdn_url: String,
    /// Public base URL of the API listener, used in presigned URLs of the local store.
    pub public_api_url: String,
    /// The `bucket` label of files registered without one (the app's own grouping, such
    /// as `images` or `avatars`; where objects live is `storage`/`s3_bucket`).
    pub bucket: String,
    /// Key for signing the local store's presigned URLs; empty means a random key kept in
    /// `<data_dir>/storage-signing.key` (created on first start).
    pub storage_signing_secret: Secret,
    /// Upload size limit for the `images` category, in bytes.
    #[serde(deserialize_with = "flex")]
    pub max_image_bytes: u64,
    /// Upload size limit for the `media` category, in bytes.
    #[serde(deserialize_with = "flex")]
    pub max_media_bytes: u64,
    /// Upload size limit for every other category, in bytes.
    #[serde(deserialize_with = "flex")]
    pub max_document_bytes: u64,
    /// Presigned or multipart uploads never registered are removed after this many seconds.
    #[serde(deserialize_with = "flex")]
    pub upload_ttl_secs: u64,
    /// How often the upload sweep runs, in seconds.
    #[serde(deserialize_with = "flex")]
    pub housekeeping_interval_secs: u64,
    /// Storage API keys, by hash: comma-separated `PROJECT:SHA256HEX` entries, as printed
    /// by `imgedge keys new`. Empty means every API call is refused (no key matches).
    pub api_keys: String,
    /// HS256 secret for bearer tokens (at least 32 bytes); also lets `imgedge token` mint
    /// development tokens. Empty disables HS256.
    pub jwt_secret: Secret,
    /// RS256/ES256 public key for bearer tokens: PEM text, or the path of a PEM file.
    /// An RSA key means RS256, an EC P-256 key ES256. Empty disables them.
    pub jwt_public_key: String,
    /// `api_keys`, `jwt_secret` and `jwt_public_key` parsed (and the PEM file read) once,
    /// when the configuration is loaded; see [`Config::credentials`].
    #[serde(skip)]
    parsed_credentials: Option<ParsedCredentials>,
}

/// The API keys and the bearer-token verifier, from `api_keys`, `jwt_secret` and
/// `jwt_public_key`.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub keys: KeyRing,
    /// `None` when neither a secret nor a public key is configured.
    pub jwt: Option<JwtVerifier>,
}

/// Credentials with a digest of the settings they were parsed from, so that a setting
/// changed after loading (as tests do) is never answered with stale keys.
#[derive(Debug, Clone)]
struct ParsedCredentials {
    from: [u8; 32],
    credentials: Credentials,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cdn_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            data_dir: PathBuf::from("./data"),
            database_url: String::new(),
            storage: StorageKind::Fs,
            s3_endpoint: String::new(),
            s3_public_endpoint: String::new(),
            s3_bucket: String::new(),
            s3_region: String::new(),
            s3_prefix: String::new(),
            s3_path_style: false,
            s3_access_key_id: String::new(),
            s3_secret_access_key: Secret::default(),
            s3_connect_timeout_ms: 2_000,
            security_key: Secret::default(),
            require_signature: false,
            client_hints: false,
            playground: true,
            playground_signing: false,
            max_source_bytes: 50 * 1024 * 1024,
            max_source_pixels: 100_000_000,
            max_output_side: 8192,
            max_animation_pixels: 50_000_000,
            memory_budget_bytes: AutoBytes::Auto,
            transform_concurrency: 0,
            queue_length: 16,
            request_deadline_ms: 15_000,
            storage_timeout_ms: 5_000,
            variant_cache_bytes: 256 * 1024 * 1024,
            variant_cache_ttl_secs: 3600,
            original_cache_bytes: AutoBytes::Auto,
            derivative_sizes: "2560,1800,640".into(),
            visibility_ttl_ms: 2_000,
            cache_max_age_secs: 86_400,
            default_quality: Quality::Fixed(80),
            auto_quality_target: auto_quality::DEFAULT_TARGET,
            auto_quality_target_webp: auto_quality::DEFAULT_TARGET_WEBP,
            auto_webp: true,
            auto_avif: false,
            webp_sharp_yuv: false,
            shutdown_grace_ms: 10_000,
            max_connections: 4096,
            max_header_bytes: 64 * 1024,
            header_timeout_ms: 10_000,
            body_timeout_ms: 20_000,
            body_min_rate: 8 * 1024,
            log_format: LogFormat::Text,
            public_cdn_url: String::new(),
            public_api_url: String::new(),
            bucket: "default".into(),
            storage_signing_secret: Secret::default(),
            max_image_bytes: 10 * 1000 * 1000,
            max_media_bytes: 100 * 1000 * 1000,
            max_document_bytes: 20 * 1000 * 1000,
            upload_ttl_secs: 24 * 3600,
            housekeeping_interval_secs: 300,
            api_keys: String::new(),
            jwt_secret: Secret::default(),
            jwt_public_key: String::new(),
            parsed_credentials: None,
        }
    }
}

impl Config {
    /// Builds the configuration from an optional TOML file, the environment (only its
    /// `IMGEDGE_*` entries are read) and flag overrides given as `(setting, value)` pairs.
    pub fn load<'a>(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let known = known_settings();
        for (name, value) in env {
            let Some(setting) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let setting = setting.to_ascii_lowercase();
            if !known.contains_key(&setting) {
                return Err(ConfigError::UnknownSetting { name });
            }
            table.insert(setting, toml::Value::String(value));
        }
        for (setting, value) in flags {
            table.insert(setting.to_owned(), toml::Value::String(value));
        }
        let config: Config = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        let credentials = config.parse_credentials()?;
        Ok(Config {
            parsed_credentials: Some(ParsedCredentials {
                from: config.credential_digest(),
                credentials,
            }),
            ..config
        })
    }

    /// Reads the real process environment. The binary calls this; tests call `load`.
    pub fn from_process(
        file: Option<&Path>,
        flags: Vec<(&str, String)>,
    ) -> Result<Config, ConfigError> {
        Config::load(file, std::env::vars(), flags)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if !auto_quality::TARGET_RANGE.contains(&self.auto_quality_target) {
            return bad("auto_quality_target must be a SSIMULACRA2 score 30..=90");
        }
        if !auto_quality::TARGET_RANGE.contains(&self.auto_quality_target_webp) {
            return bad("auto_quality_target_webp must be a SSIMULACRA2 score 30..=90");
        }
        if self.max_animation_pixels == 0 {
            return bad("max_animation_pixels must be positive");
        }
        if self.max_output_side == 0 || self.max_output_side > 65_535 {
            return bad("max_output_side must be 1..=65535");
        }
        if self.max_source_pixels == 0 || self.max_source_bytes == 0 {
            return bad("max_source_pixels and max_source_bytes must be positive");
        }
        if self.request_deadline_ms == 0 || self.storage_timeout_ms == 0 {
            return bad("request_deadline_ms and storage_timeout_ms must be positive");
        }
        if let AutoBytes::Bytes(n) = self.memory_budget_bytes
            && n < 16 << 20
        {
            return bad("memory_budget_bytes must be at least 16777216 (16 MiB) or auto");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be positive");
        }
        if !(8192..=16 << 20).contains(&self.max_header_bytes) {
            return bad("max_header_bytes must be 8192..=16777216");
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 || self.body_min_rate == 0 {
            return bad("header_timeout_ms, body_timeout_ms and body_min_rate must be positive");
        }
        if self.require_signature && self.security_key.is_empty() {
            return bad("require_signature needs security_key (IMGEDGE_SECURITY_KEY)");
        }
        if self.housekeeping_interval_secs == 0 {
            return bad("housekeeping_interval_secs must be positive");
        }
        if let Err(why) = crate::db::check_bucket(&self.bucket) {
            return bad(&format!(
                "bucket (IMGEDGE_BUCKET), the default label of files: {why}"
            ));
        }
        if !self.database_url.is_empty()
            && !self.database_url.starts_with("sqlite:")
            && !crate::db::is_postgres_url(&self.database_url)
        {
            return bad(
                "database_url (IMGEDGE_DATABASE_URL) must start with sqlite:// or postgres://",
            );
        }
        if self.storage == StorageKind::S3 {
            if self.s3_bucket.is_empty() {
                return bad("storage = s3 needs s3_bucket (IMGEDGE_S3_BUCKET)");
            }
            if self.s3_access_key_id.is_empty() != self.s3_secret_access_key.is_empty() {
                return bad(
                    "s3_access_key_id and s3_secret_access_key must be set together \
                     (or neither, for the standard AWS credential chain)",
                );
            }
            for (name, url) in [
                ("s3_endpoint", &self.s3_endpoint),
                ("s3_public_endpoint", &self.s3_public_endpoint),
            ] {
                if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
                    return Err(ConfigError::Invalid(format!(
                        "{name} must be an http:// or https:// URL, got `{url}`"
                    )));
                }
            }
            if self.s3_connect_timeout_ms == 0 {
                return bad("s3_connect_timeout_ms must be positive");
            }
        }
        parse_derivative_sizes(&self.derivative_sizes).map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The API keys and the token verifier: those parsed when the configuration was
    /// loaded, or parsed now when a credential setting was changed since (or the value was
    /// built without `load`).
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        match &self.parsed_credentials {
            Some(parsed) if parsed.from == self.credential_digest() => {
                Ok(parsed.credentials.clone())
            }
            _ => self.parse_credentials(),
        }
    }

    fn parse_credentials(&self) -> Result<Credentials, ConfigError> {
        let keys = KeyRing::parse(&self.api_keys)
            .map_err(|e| ConfigError::Invalid(format!("api_keys (IMGEDGE_API_KEYS): {e}")))?;
        let jwt = JwtVerifier::from_settings(&self.jwt_secret, &self.jwt_public_key)
            .map_err(ConfigError::Invalid)?;
        Ok(Credentials { keys, jwt })
    }

    fn credential_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for part in [
            self.api_keys.as_str(),
            &self.jwt_secret,
            self.jwt_public_key.as_str(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part.as_bytes());
        }
        hash.finalize().into()
    }

    /// The metadata store URL, defaulting to SQLite inside the data directory.
    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("imgedge.db").display())
        } else {
            self.database_url.clone()
        }
    }

    /// The derivative long edges, ascending; empty when derivatives are off.
    pub fn derivative_sizes(&self) -> Vec<u32> {
        parse_derivative_sizes(&self.derivative_sizes).unwrap_or_default()
    }

    /// Whether reduced copies are built and used.
    pub fn derivatives_enabled(&self) -> bool {
        !self.derivative_sizes().is_empty()
    }

    /// Concurrent transforms, resolving 0 to the number of cores.
    pub fn transform_concurrency(&self) -> usize {
        match self.transform_concurrency {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The originals cache capacity in effect. `auto` is 64 MiB in front of S3, where a miss
    /// is a network round trip, and 0 for the fs backend: its files are in the kernel's page
    /// cache already, and a second copy in the process only adds to its memory (W1 peak RSS
    /// 360 -> 285 MB, issue 5) for a read that costs well under a millisecond.
    pub fn original_cache_capacity(&self) -> u64 {
        match (self.original_cache_bytes, self.storage) {
            (AutoBytes::Bytes(n), _) => n,
            (AutoBytes::Auto, StorageKind::S3) => 64 * 1024 * 1024,
            (AutoBytes::Auto, StorageKind::Fs) => 0,
        }
    }

    /// The memory budget in bytes (`auto` resolved from the machine).
    pub fn memory_budget(&self) -> u64 {
        match self.memory_budget_bytes {
            AutoBytes::Bytes(n) => n,
            AutoBytes::Auto => crate::budget::default_budget(),
        }
    }

    pub fn request_deadline(&self) -> Duration {
        Duration::from_millis(self.request_deadline_ms)
    }

    pub fn storage_timeout(&self) -> Duration {
        Duration::from_millis(self.storage_timeout_ms)
    }

    /// How fast request bodies must arrive.
    pub fn body_pace(&self) -> crate::storage::BodyPace {
        crate::storage::BodyPace {
            grace: Duration::from_millis(self.body_timeout_ms),
            min_rate: self.body_min_rate,
        }
    }

    /// The S3 settings, for `storage = "s3"`.
    pub fn s3_settings(&self) -> crate::storage::S3Settings {
        crate::storage::S3Settings {
            endpoint: self.s3_endpoint.clone(),
            public_endpoint: self.s3_public_endpoint.clone(),
            bucket: self.s3_bucket.clone(),
            region: self.s3_region.clone(),
            prefix: self.s3_prefix.clone(),
            path_style: self.s3_path_style,
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            connect_timeout: Duration::from_millis(self.s3_connect_timeout_ms),
            attempt_timeout: self.storage_timeout(),
        }
    }

    /// The base URL of presigned local-store URLs: `public_api_url` or `http://<api_addr>`.
    pub fn api_base_url(&self) -> String {
        if self.public_api_url.is_empty() {
            format!("http://{}", self.api_addr)
        } else {
            self.public_api_url.trim_end_matches('/').to_owned()
        }
    }

    /// The base URL printed in links: `public_cdn_url` or `http://<cdn_addr>`.
    pub fn cdn_base_url(&self) -> String {
        if self.public_cdn_url.is_empty() {
            format!("http://{}", self.cdn_addr)
        } else {
            self.public_cdn_url.trim_end_matches('/').to_owned()
        }
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Every setting name, taken from the serialized defaults plus the optional ones.
fn known_settings() -> BTreeMap<String, ()> {
    let defaults = toml::Table::try_from(Config::default())
        .expect("invariant: the default Config serializes to a TOML table");
    defaults.into_iter().map(|(k, _)| (k, ())).collect()
}

/// Accepts a value either in its native TOML type or as a string parsed with `FromStr`,
/// so that environment variables and flags (always strings) and TOML share one schema.
fn flex<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Str(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    let text = match Raw::deserialize(deserializer)? {
        Raw::Str(s) => s,
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => f.to_string(),
        Raw::Bool(b) => b.to_string(),
    };
    text.trim()
        .parse::<T>()
        .map_err(|e| serde::de::Error::custom(format!("`{text}`: {e}")))
}

/// `default_quality`, named in its error.
fn flex_quality<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Quality, D::Error> {
    flex::<D, Quality>(deserializer).map_err(|e| {
        serde::de::Error::custom(format!("default_quality (IMGEDGE_DEFAULT_QUALITY): {e}"))
    })
}

/// `default_quality` prints as it is written: a number, or `"auto"`.
impl Serialize for Quality {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Quality::Fixed(q) => serializer.serialize_u8(*q),
            Quality::Auto => serializer.serialize_str("auto"),
        }
    }
}

/// Parses `derivative_sizes`: distinct long edges in 64..=8192, any order; empty is allowed.
fn parse_derivative_sizes(raw: &str) -> Result<Vec<u32>, String> {
    let mut sizes = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let size: u32 = part.parse().map_err(|_| {
            format!(
                "derivative_sizes (IMGEDGE_DERIVATIVE_SIZES): `{part}` is not a number of pixels"
            )
        })?;
        if !(64..=8192).contains(&size) {
            return Err(format!(
                "derivative_sizes (IMGEDGE_DERIVATIVE_SIZES): {size} is outside 64..=8192"
            ));
        }
        if sizes.contains(&size) {
            return Err(format!(
                "derivative_sizes (IMGEDGE_DERIVATIVE_SIZES): {size} is listed twice"
            ));
        }
        sizes.push(size);
    }
    sizes.sort_unstable();
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, env(&[]), []).unwrap();
        assert_eq!(c.cdn_addr.port(), 8080);
        assert_eq!(c.api_addr.port(), 8081);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.database_url().starts_with("sqlite://"));
        assert_eq!(c.derivative_sizes(), vec![640, 1800, 2560]);
        assert!(!c.webp_sharp_yuv);
        let sharp = Config::load(None, env(&[("IMGEDGE_WEBP_SHARP_YUV", "true")]), []).unwrap();
        assert!(sharp.webp_sharp_yuv);
    }

    #[test]
    fn the_originals_cache_follows_the_backend_unless_sized() {
        let fs = Config::load(None, env(&[]), []).unwrap();
        assert_eq!(fs.original_cache_bytes, AutoBytes::Auto);
        assert_eq!(fs.original_cache_capacity(), 0);
        let mut s3 = fs.clone();
        s3.storage = StorageKind::S3;
        assert_eq!(s3.original_cache_capacity(), 64 << 20);
        let sized = Config::load(
            None,
            env(&[("IMGEDGE_ORIGINAL_CACHE_BYTES", "1048576")]),
            [],
        )
        .unwrap();
        assert_eq!(sized.original_cache_capacity(), 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imgedge.toml");
        for (text, capacity) in [("0", 0), ("\"auto\"", 0), ("2048", 2048)] {
            std::fs::write(&file, format!("original_cache_bytes = {text}\n")).unwrap();
            let c = Config::load(Some(&file), env(&[]), []).unwrap();
            assert_eq!(c.original_cache_capacity(), capacity, "{text}");
        }
    }

    #[test]
    fn derivatives_can_be_turned_off_or_resized() {
        let off = Config::load(None, env(&[("IMGEDGE_DERIVATIVE_SIZES", "")]), []).unwrap();
        assert!(off.derivative_sizes().is_empty());
        let custom = Config::load(
            None,
            env(&[("IMGEDGE_DERIVATIVE_SIZES", " 2048, 512 ,1024")]),
            [],
        )
        .unwrap();
        assert_eq!(custom.derivative_sizes(), vec![512, 1024, 2048]);
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imgedge.toml");
        std::fs::write(&file, "variant_cache_bytes = 10\nauto_avif = true\n").unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("IMGEDGE_VARIANT_CACHE_BYTES", "0"),
                ("IMGEDGE_CDN_ADDR", "127.0.0.1:9000"),
                ("PATH", "/bin"),
            ]),
            [("cdn_addr", "127.0.0.1:9001".to_owned())],
        )
        .unwrap();
        assert_eq!(c.variant_cache_bytes, 0);
        assert!(c.auto_avif);
        assert_eq!(c.cdn_addr.port(), 9001);
    }

    #[test]
    fn bad_settings_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("IMGEDGE_CDN_ADRR", "x")], "IMGEDGE_CDN_ADRR"),
            (&[("IMGEDGE_CDN_ADDR", "nope")], "nope"),
            (&[("IMGEDGE_DEFAULT_QUALITY", "0")], "default_quality"),
            (&[("IMGEDGE_DEFAULT_QUALITY", "best")], "`auto`"),
            (
                &[("IMGEDGE_AUTO_QUALITY_TARGET", "95")],
                "auto_quality_target",
            ),
            (
                &[("IMGEDGE_AUTO_QUALITY_TARGET", "NaN")],
                "auto_quality_target",
            ),
            (&[("IMGEDGE_REQUIRE_SIGNATURE", "true")], "security_key"),
            (&[("IMGEDGE_AUTO_WEBP", "maybe")], "maybe"),
            (&[("IMGEDGE_DERIVATIVE_SIZES", "2560,big")], "`big`"),
            (&[("IMGEDGE_ORIGINAL_CACHE_BYTES", "lots")], "`auto`"),
            (&[("IMGEDGE_DERIVATIVE_SIZES", "32")], "64..=8192"),
            (&[("IMGEDGE_DERIVATIVE_SIZES", "640,640")], "twice"),
            (&[("IMGEDGE_API_KEYS", "web")], "api_keys"),
            (&[("IMGEDGE_API_KEYS", "web:abc")], "`web:abc`"),
            (&[("IMGEDGE_JWT_SECRET", "too-short")], "jwt_secret"),
            (&[("IMGEDGE_JWT_SECRET", "too-short")], "at least 32 bytes"),
            (
                &[("IMGEDGE_JWT_PUBLIC_KEY", "/no/such/key.pem")],
                "jwt_public_key",
            ),
            (
                &[("IMGEDGE_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----")],
                "jwt_public_key",
            ),
        ];
        for (vars, needle) in cases {
            let err = Config::load(None, env(vars), []).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
    }

    #[test]
    fn auth_settings() {
        let c = Config::load(None, env(&[]), []).unwrap();
        assert!(c.api_keys.is_empty() && c.jwt_secret.is_empty() && c.jwt_public_key.is_empty());
        let hash = crate::auth::sha256_hex("pk_example");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imgedge.toml");
        std::fs::write(
            &file,
            format!(
                "api_keys = \"web:{hash}\"\njwt_secret = \"{}\"\n",
                "s".repeat(32)
            ),
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[]), []).unwrap();
        assert_eq!(c.api_keys, format!("web:{hash}"));
        assert_eq!(KeyRing::parse(&c.api_keys).unwrap().len(), 1);
        assert!(
            JwtVerifier::from_settings(&c.jwt_secret, &c.jwt_public_key)
                .unwrap()
                .is_some_and(|v| v.can_mint())
        );
        let c = Config::load(
            Some(&file),
            env(&[(
                "IMGEDGE_API_KEYS",
                &format!("web:{hash}, app:{}", "0".repeat(64)),
            )]),
            [],
        )
        .unwrap();
        assert_eq!(KeyRing::parse(&c.api_keys).unwrap().len(), 2);
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut c = Config::load(None, env(&[]), []).unwrap();
        c.security_key = "hunter2-hunter2".into();
        let text = format!("{c:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn unknown_toml_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "cdn_adr = \"1.2.3.4:1\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[]), []).unwrap_err();
        assert!(err.to_string().contains("cdn_adr"), "{err}");
    }
}
