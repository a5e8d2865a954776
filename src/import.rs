//! `imgedge import`: registers images that already exist as files, so an existing tree
//! can be served without re-uploading anything.
//!
//! - A directory (a Thumbor file-loader root, a static site's images): relative paths
//!   become keys; objects are adopted into local storage by hard link when possible, or
//!   uploaded to S3.
//! - `s3://bucket/prefix`: objects already in the configured bucket are registered under
//!   their own keys (nothing is copied).
//!
//! Idempotent: a key already registered with the same size is left alone; one whose file
//! changed is refreshed.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::app::App;
use crate::db::{DbError, NewFile, OwnerType, Visibility};
use crate::imaging;
use crate::key::ObjectKey;
use crate::storage::Storage;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Walk {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}")]
    Source(String),
    #[error("listing the bucket: {0}")]
    List(crate::storage::StorageError),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Where the images are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportSource {
    Dir(PathBuf),
    /// Objects under `prefix` in `bucket`, which must be the configured S3 bucket.
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl ImportSource {
    /// `s3://bucket/prefix` or a directory path.
    pub fn parse(text: &str) -> Result<ImportSource, ImportError> {
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(ImportSource::Dir(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ImportError::Source(format!(
                "`{text}` names no bucket; expected s3://bucket/prefix"
            )));
        }
        Ok(ImportSource::S3 {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

/// What to import and how to register it.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub source: ImportSource,
    /// Prepended to each relative path to form the key (e.g. `legacy/`); directories only.
    pub prefix: String,
    pub visibility: Visibility,
    pub project: String,
    pub owner_id: String,
}

/// The outcome, for the CLI to print.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub added: usize,
    pub refreshed: usize,
    pub unchanged: usize,
    /// Files left out, with the reason (not an image, too large, unusable name).
    pub skipped: Vec<(PathBuf, String)>,
}

pub async fn import(app: &App, options: &ImportOptions) -> Result<ImportReport, ImportError> {
    match &options.source {
        ImportSource::Dir(dir) => import_dir(app, options, dir).await,
        ImportSource::S3 { bucket, prefix } => import_bucket(app, options, bucket, prefix).await,
    }
}

async fn import_dir(
    app: &App,
    options: &ImportOptions,
    dir: &Path,
) -> Result<ImportReport, ImportError> {
    if !dir.is_dir() {
        return Err(ImportError::NotADirectory(dir.to_owned()));
    }
    let root = dir.to_owned();
    let files = crate::storage::blocking_io(move || walk(&root))
        .await
        .expect("invariant: the directory walk does not panic")?;
    let mut report = ImportReport::default();
    for (i, path) in files.iter().enumerate() {
        if i > 0 && i % 500 == 0 {
            tracing::info!(done = i, total = files.len(), "importing");
        }
        let outcome = import_one(app, options, dir, path).await?;
        report.count(path.clone(), outcome);
    }
    Ok(report)
}

/// Registers objects already in the configured bucket under their own keys.
async fn import_bucket(
    app: &App,
    options: &ImportOptions,
    bucket: &str,
    prefix: &str,
) -> Result<ImportReport, ImportError> {
    let Storage::S3(s3) = &app.storage else {
        return Err(ImportError::Source(
            "importing from s3:// needs storage = s3 (IMGEDGE_STORAGE=s3)".into(),
        ));
    };
    if bucket != s3.bucket() {
        return Err(ImportError::Source(format!(
            "bucket `{bucket}` is not the configured bucket `{}`; objects are served from \
             IMGEDGE_S3_BUCKET only",
            s3.bucket()
        )));
    }
    if !options.prefix.is_empty() {
        return Err(ImportError::Source(
            "--prefix cannot rename objects already in the bucket; they keep their keys".into(),
        ));
    }
    let objects = s3.list(prefix).await.map_err(ImportError::List)?;
    tracing::info!(objects = objects.len(), bucket, prefix, "importing from S3");
    let mut report = ImportReport::default();
    for (i, object) in objects.iter().enumerate() {
        if i > 0 && i % 500 == 0 {
            tracing::info!(done = i, total = objects.len(), "importing");
        }
        let name = PathBuf::from(format!("s3://{bucket}/{}", object.key));
        let key = match ObjectKey::parse(&object.key) {
            Ok(key) => key,
            Err(e) => {
                report.count(name, Outcome::Skipped(format!("unusable key: {e}")));
                continue;
            }
        };
        let file_name = object.key.rsplit('/').next().unwrap_or_default().to_owned();
        let outcome = register(app, options, key, object.size, file_name, Fetch::Stored).await?;
        report.count(name, outcome);
    }
    Ok(report)
}

impl ImportReport {
    fn count(&mut self, name: PathBuf, outcome: Outcome) {
        match outcome {
            Outcome::Added => self.added += 1,
            Outcome::Refreshed => self.refreshed += 1,
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Skipped(reason) => self.skipped.push((name, reason)),
        }
    }
}

enum Outcome {
    Added,
    Refreshed,
    Unchanged,
    Skipped(String),
}

async fn import_one(
    app: &App,
    options: &ImportOptions,
    root: &Path,
    path: &Path,
) -> Result<Outcome, ImportError> {
    let relative = path
        .strip_prefix(root)
        .expect("invariant: walked paths are under the root");
    let Some(relative) = relative.to_str() else {
        return Ok(Outcome::Skipped("file name is not UTF-8".into()));
    };
    let relative = relative.replace(std::path::MAIN_SEPARATOR, "/");
    let key = match ObjectKey::parse(&format!("{}{relative}", options.prefix)) {
        Ok(key) => key,
        Err(e) => return Ok(Outcome::Skipped(format!("unusable key: {e}"))),
    };
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => return Ok(Outcome::Skipped(e.to_string())),
    };
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    register(app, options, key, size, name, Fetch::Local(path)).await
}

/// Where an imported object's bytes are.
enum Fetch<'a> {
    /// A local file, to be stored under the key.
    Local(&'a Path),
    /// Already in storage under the key.
    Stored,
}

/// Probes the object and registers (or refreshes) it under `key`.
async fn register(
    app: &App,
    options: &ImportOptions,
    key: ObjectKey,
    size: u64,
    original_name: String,
    fetch: Fetch<'_>,
) -> Result<Outcome, ImportError> {
    if size > app.config.max_source_bytes {
        return Ok(Outcome::Skipped(format!(
            "{size} bytes is over max_source_bytes ({})",
            app.config.max_source_bytes
        )));
    }
    let existing = app.db.find_by_key(&key).await?;
    if existing
        .as_ref()
        .is_some_and(|rec| rec.size == size && rec.visibility == options.visibility)
    {
        return Ok(Outcome::Unchanged);
    }
    let bytes = match fetch {
        Fetch::Local(path) => tokio::fs::read(path).await.map(Bytes::from),
        Fetch::Stored => app
            .storage
            .get(&key, app.config.max_source_bytes)
            .await
            .map_err(std::io::Error::other),
    };
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return Ok(Outcome::Skipped(e.to_string())),
    };
    let info = match imaging::probe(&bytes) {
        Ok(info) => info,
        Err(e) => return Ok(Outcome::Skipped(format!("not a usable image: {e}"))),
    };
    let (width, height) = info.oriented_size();
    let new = NewFile {
        project: options.project.clone(),
        key: key.clone(),
        original_name,
        mime_type: info.format.mime().to_owned(),
        size: bytes.len() as u64,
        width: Some(width),
        height: Some(height),
        visibility: options.visibility,
        owner_id: options.owner_id.clone(),
        owner_type: OwnerType::Service,
    };
    if let Fetch::Local(path) = fetch {
        let stored = match &app.storage {
            Storage::Fs(fs, _) => fs.adopt(&key, path).map_err(|e| e.to_string()),
            Storage::S3(_) => app
                .storage
                .put(&key, bytes)
                .await
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = stored {
            return Ok(Outcome::Skipped(format!("cannot store: {e}")));
        }
    }
    let outcome = match existing {
        Some(_) => {
            app.db.refresh_file(&new).await?;
            Outcome::Refreshed
        }
        None => {
            app.db.insert_file(new).await?;
            Outcome::Added
        }
    };
    app.caches.purge(&key).await;
    Ok(outcome)
}

/// Every regular file under `root`, sorted, not following symlinked directories and
/// skipping hidden entries (names starting with `.`).
fn walk(root: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| ImportError::Walk {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| ImportError::Walk {
                path: dir.clone(),
                source,
            })?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type().map_err(|source| ImportError::Walk {
                path: entry.path(),
                source,
            })?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    Ok(files)
}
