//! Object storage: where originals live. `Storage` is a closed enum over the backends
//! (local filesystem, S3-compatible) so handlers hold one concrete type.
//!
//! Invariants: every read is size-capped (an oversize object is refused before it is read
//! whole); keys reach this module only as validated `ObjectKey`s, never raw strings; no
//! partial objects are ever visible (writes go to a temporary file and are renamed).

mod fs;
pub mod presign;
mod s3;

use bytes::Bytes;
use time::OffsetDateTime;

pub use fs::FsStorage;
pub use s3::{Listed, MAX_ATTEMPTS as S3_MAX_ATTEMPTS, S3Settings, S3Storage};

use presign::{LocalSigner, Permit};

/// S3's smallest part but the last; the local store keeps the same rule so clients that
/// work against one node work against S3.
pub const MIN_PART_BYTES: u64 = 5 * 1024 * 1024;

use crate::key::ObjectKey;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found")]
    NotFound,
    #[error("object is {size} bytes, over the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("storage timed out")]
    Timeout,
    #[error("the upload is empty")]
    Empty,
    #[error("the upload broke off: {0}")]
    Incomplete(String),
    /// The body arrived slower than the service accepts (see [`BodyPace`]).
    #[error("the body arrived slower than {min_rate} bytes/s after {grace_ms} ms")]
    TooSlow { min_rate: u64, grace_ms: u64 },
    #[error("part {part} is missing or its ETag does not match")]
    PartMismatch { part: u32 },
    #[error("part {part} is {size} bytes; every part but the last must be at least 5 MiB")]
    PartTooSmall { part: u32, size: u64 },
    /// The local store's disk (or quota) is full; nothing was written.
    #[error("the store's disk is full")]
    Full,
    #[error("storage I/O: {0}")]
    Io(std::io::Error),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The configured bucket does not exist (any more): the server's own configuration is
    /// at fault, not the request.
    #[error("the configured bucket `{0}` does not exist")]
    BucketMissing(String),
}

impl From<std::io::Error> for StorageError {
    fn from(e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StorageError::Full
            }
            _ => StorageError::Io(e),
        }
    }
}

/// How fast a request body must arrive: it may take `grace` plus one second per
/// `min_rate` bytes received so far (Apache's `mod_reqtimeout` rule). A client that
/// trickles a body, or stops sending, is cut off instead of holding its connection and
/// temporary file for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    pub grace: std::time::Duration,
    /// Bytes per second; at least 1.
    pub min_rate: u64,
}

impl BodyPace {
    /// The time allowed for the first `received` bytes and the next frame.
    pub fn allowance(&self, received: u64) -> std::time::Duration {
        self.grace
            + std::time::Duration::from_secs_f64(received as f64 / self.min_rate.max(1) as f64)
    }

    fn too_slow(&self) -> StorageError {
        StorageError::TooSlow {
            min_rate: self.min_rate,
            grace_ms: self.grace.as_millis() as u64,
        }
    }
}

/// Facts about a stored object, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
}

/// The configured object store.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The embedded store; its presigned URLs are answered by the API listener itself.
    Fs(FsStorage, LocalSigner),
    S3(S3Storage),
}

impl Storage {
    /// Reads a whole object, refusing it when it is larger than `max_bytes`.
    pub async fn get(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.get(key, max_bytes).await,
            Storage::S3(s3) => s3.get(key, max_bytes).await,
        }
    }

    /// Reads at most the first `len` bytes of an object (all of it when it is shorter).
    pub async fn get_prefix(&self, key: &ObjectKey, len: u64) -> Result<Bytes, StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.get_prefix(key, len).await,
            Storage::S3(s3) => s3.get_prefix(key, len).await,
        }
    }

    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectHead, StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.head(key).await,
            Storage::S3(s3) => s3.head(key).await,
        }
    }

    /// Stores `bytes` under `key` atomically (temporary file + rename).
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.put(key, bytes).await,
            Storage::S3(s3) => s3.put(key, bytes).await,
        }
    }

    /// Removes an object; removing a missing object is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.delete(key).await,
            Storage::S3(s3) => s3.delete(key).await,
        }
    }

    /// Removes the local store's temporary files left by processes that died; how many
    /// leftovers went (always 0 with S3, whose uploads are atomic on its side).
    pub async fn sweep_temporary(&self) -> usize {
        match self {
            Storage::Fs(fs, _) => fs.sweep_temporary().await,
            Storage::S3(_) => 0,
        }
    }

    /// The local store's multipart uploads idle for `age` (none with S3, which keeps and
    /// expires parts itself).
    pub async fn idle_multipart(&self, age: std::time::Duration) -> Vec<String> {
        match self {
            Storage::Fs(fs, _) => fs.idle_multipart(age).await,
            Storage::S3(_) => Vec::new(),
        }
    }

    /// Checks the store is usable; `/readyz` and start-up call it.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.check().await,
            Storage::S3(s3) => s3.check().await,
        }
    }

    /// A presigned URL for what `permit` allows, valid until `expires`.
    pub async fn presign(
        &self,
        permit: &Permit,
        expires: OffsetDateTime,
    ) -> Result<String, StorageError> {
        match self {
            Storage::Fs(_, signer) => Ok(signer.url(permit, expires)),
            Storage::S3(s3) => s3.presign(permit, expires).await,
        }
    }

    /// Whether a presigned PUT admits exactly `Permit::Put::max_size` bytes (S3: the length
    /// is a signed header) rather than at most that many (the local store streams with a
    /// cap). Where it is exact, an upload must declare its size before it is presigned.
    pub fn signs_exact_size(&self) -> bool {
        matches!(self, Storage::S3(_))
    }

    /// Starts a multipart upload of `key`; returns its upload id.
    pub async fn create_multipart(
        &self,
        key: &ObjectKey,
        content_type: &str,
    ) -> Result<String, StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.create_multipart().await,
            Storage::S3(s3) => s3.create_multipart(key, content_type).await,
        }
    }

    /// Joins the listed `(part number, etag)` parts into `key`, refusing more than
    /// `max_bytes` in all. Returns the object's size.
    pub async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: &[(u32, String)],
        max_bytes: u64,
    ) -> Result<u64, StorageError> {
        match self {
            Storage::Fs(fs, _) => {
                fs.complete_multipart(key, upload_id, parts, max_bytes)
                    .await
            }
            Storage::S3(s3) => {
                s3.complete_multipart(key, upload_id, parts, max_bytes)
                    .await
            }
        }
    }

    /// Drops a multipart upload and its parts (idempotent).
    pub async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs, _) => fs.abort_multipart(upload_id).await,
            Storage::S3(s3) => s3.abort_multipart(key, upload_id).await,
        }
    }
}

/// Runs blocking file-system work (a whole-file read, a directory walk or sweep) on
/// tokio's blocking threads, off the async runtime. Not for CPU work, which goes to the
/// CPU pool (`cpu`); this is the one place allowed to call `spawn_blocking` for it.
#[allow(clippy::disallowed_methods)]
pub(crate) async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(std::io::Error::other)
}

/// `attachment` with an ASCII fallback name and the RFC 5987 UTF-8 name.
pub(crate) fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded =
        percent_encoding::utf8_percent_encode(filename, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}
