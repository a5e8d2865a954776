//! `imgedge import`: registers images that already sit in a directory as files, keeping
//! their relative paths as keys, so an existing tree (a Thumbor file-loader root, a static
//! site's images) can be served without re-uploading anything.
//!
//! Idempotent: a key already registered with the same size is left alone; one whose file
//! changed is refreshed. Objects are adopted into storage by hard link when possible.

use std::path::{Path, PathBuf};

use crate::app::App;
use crate::db::{DbError, NewFile, OwnerType, Visibility};
use crate::edge::url::ObjectKey;
use crate::imaging::{self, SourceFormat};
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
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What to import and how to register it.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub dir: PathBuf,
    /// Prepended to each relative path to form the key (e.g. `legacy/`).
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

pub async fn import_dir(app: &App, options: &ImportOptions) -> Result<ImportReport, ImportError> {
    if !options.dir.is_dir() {
        return Err(ImportError::NotADirectory(options.dir.clone()));
    }
    let root = options.dir.clone();
    let files = tokio::task::spawn_blocking(move || walk(&root))
        .await
        .expect("invariant: the directory walk does not panic")?;
    let mut report = ImportReport::default();
    for (i, path) in files.iter().enumerate() {
        if i > 0 && i % 500 == 0 {
            tracing::info!(done = i, total = files.len(), "importing");
        }
        match import_one(app, options, path).await? {
            Outcome::Added => report.added += 1,
            Outcome::Refreshed => report.refreshed += 1,
            Outcome::Unchanged => report.unchanged += 1,
            Outcome::Skipped(reason) => report.skipped.push((path.clone(), reason)),
        }
    }
    Ok(report)
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
    path: &Path,
) -> Result<Outcome, ImportError> {
    let relative = path
        .strip_prefix(&options.dir)
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
    if size > app.config.max_source_bytes {
        return Ok(Outcome::Skipped(format!(
            "{size} bytes is over max_source_bytes ({})",
            app.config.max_source_bytes
        )));
    }
    let bytes = match tokio::fs::read(path).await {
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
        original_name: path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        mime_type: mime_of(info.format).to_owned(),
        size,
        width: Some(width),
        height: Some(height),
        visibility: options.visibility,
        owner_id: options.owner_id.clone(),
        owner_type: OwnerType::Service,
    };
    let existing = app.db.find_by_key(&key).await?;
    if existing
        .as_ref()
        .is_some_and(|rec| rec.size == size && rec.visibility == options.visibility)
    {
        return Ok(Outcome::Unchanged);
    }
    let Storage::Fs(fs) = &app.storage;
    if let Err(e) = fs.adopt(&key, path) {
        return Ok(Outcome::Skipped(format!("cannot store: {e}")));
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

fn mime_of(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::Jpeg => "image/jpeg",
        SourceFormat::Png => "image/png",
        SourceFormat::Webp => "image/webp",
        SourceFormat::Gif => "image/gif",
    }
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
