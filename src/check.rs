//! `imgedge check`: whether the metadata store and the object store agree, after a crash or
//! at any time. Read-only except for what opening the store does anyway (the local store
//! sweeps dead processes' temporary files when it opens).
//!
//! - the database engine's own check (SQLite `integrity_check` and `foreign_key_check`);
//! - every registered file has its object, at its registered size;
//! - every recorded reduced copy exists;
//! - how many derivative builds and object deletions are still to finish (not problems:
//!   the builder and housekeeping finish them).

use std::fmt;

use crate::app::App;
use crate::db::{DbError, Derivatives};
use crate::imaging::Pyramid;
use crate::storage::StorageError;

/// Files read per database round trip.
const PAGE: u32 = 500;

/// What `check` found.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub engine: &'static str,
    pub files: u64,
    pub copies: u64,
    /// Files whose reduced copies are still to be built (or being built).
    pub builds_pending: u64,
    /// Deleted files whose objects are still to be removed.
    pub deletions_pending: u64,
    /// Each problem, one line: a file without its object, a missing copy, a database fault.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        writeln!(
            f,
            "database ({}): {}",
            self.engine,
            if self.problems.iter().any(|p| p.starts_with("database")) {
                "FAILED"
            } else {
                "ok"
            }
        )?;
        writeln!(
            f,
            "files: {} checked, reduced copies: {} checked",
            self.files, self.copies
        )?;
        writeln!(
            f,
            "pending: {} derivative builds, {} object deletions",
            self.builds_pending, self.deletions_pending
        )?;
        write!(
            f,
            "{}",
            if self.is_sound() {
                "sound".to_owned()
            } else {
                format!("{} problem(s)", self.problems.len())
            }
        )
    }
}

/// Checks the whole store. Errors only when the database cannot be read at all; every
/// inconsistency is a line in the report.
pub async fn check(app: &App) -> Result<CheckReport, DbError> {
    let mut report = CheckReport {
        engine: app.db.engine(),
        ..CheckReport::default()
    };
    report.problems.extend(
        app.db
            .integrity_problems()
            .await?
            .into_iter()
            .map(|p| format!("database: {p}")),
    );
    report.deletions_pending = app.db.deletion_backlog().await?;
    let mut after = String::new();
    loop {
        let page = app.db.stored_objects(&after, PAGE).await?;
        let Some((last, _, _)) = page.last() else {
            break;
        };
        after = last.as_str().to_owned();
        for (key, size, derivatives) in page {
            report.files += 1;
            match app.storage.head(&key).await {
                Ok(head) if head.size == size => {}
                Ok(head) => report.problems.push(format!(
                    "file {key}: its object is {} bytes, {size} registered",
                    head.size
                )),
                Err(StorageError::NotFound) => {
                    report
                        .problems
                        .push(format!("file {key}: its object is missing"));
                }
                Err(e) => report.problems.push(format!("file {key}: {e}")),
            }
            let pyramid = match Derivatives::from_column(derivatives.as_deref()) {
                Ok(Derivatives::Pending | Derivatives::Claimed) => {
                    report.builds_pending += 1;
                    continue;
                }
                Ok(Derivatives::Never) => continue,
                Ok(Derivatives::Built(pyramid)) => pyramid,
                Err(e) => {
                    report
                        .problems
                        .push(format!("file {key}: unreadable reduced-copy record: {e}"));
                    continue;
                }
            };
            for level in &pyramid.levels {
                let at = key.derivative(Pyramid::long_edge(*level));
                report.copies += 1;
                match app.storage.head(&at).await {
                    Ok(_) => {}
                    Err(StorageError::NotFound) => report
                        .problems
                        .push(format!("file {key}: reduced copy {at} is missing")),
                    Err(e) => report.problems.push(format!("file {key}: {at}: {e}")),
                }
            }
        }
    }
    Ok(report)
}
