//! Object storage: where originals live. `Storage` is a closed enum over the backends
//! (local filesystem now; S3 joins it later) so handlers hold one concrete type.
//!
//! Invariants: every read is size-capped (an oversize object is refused before it is read
//! whole); keys reach this module only as validated `ObjectKey`s, never raw strings; no
//! partial objects are ever visible (writes go to a temporary file and are renamed).

mod fs;
pub mod presign;

use bytes::Bytes;

pub use fs::FsStorage;

use crate::edge::url::ObjectKey;

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
    #[error("part {part} is missing or its ETag does not match")]
    PartMismatch { part: u32 },
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Facts about a stored object, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectHead {
    pub size: u64,
}

/// The configured object store.
#[derive(Debug, Clone)]
pub enum Storage {
    Fs(FsStorage),
}

impl Storage {
    /// Reads a whole object, refusing it when it is larger than `max_bytes`.
    pub async fn get(&self, key: &ObjectKey, max_bytes: u64) -> Result<Bytes, StorageError> {
        match self {
            Storage::Fs(fs) => fs.get(key, max_bytes).await,
        }
    }

    pub async fn head(&self, key: &ObjectKey) -> Result<ObjectHead, StorageError> {
        match self {
            Storage::Fs(fs) => fs.head(key).await,
        }
    }

    /// Stores `bytes` under `key` atomically (temporary file + rename).
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs) => fs.put(key, bytes).await,
        }
    }

    /// Removes an object; removing a missing object is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs) => fs.delete(key).await,
        }
    }

    /// Checks the store is usable; `/readyz` and start-up call it.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self {
            Storage::Fs(fs) => fs.check().await,
        }
    }
}
