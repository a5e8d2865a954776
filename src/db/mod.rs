//! The metadata store: the only module that holds SQL. `Db` is a closed enum over the
//! engines (SQLite is the embedded default; PostgreSQL joins it later) with one typed
//! query per operation. Migrations run when the store is opened.
//!
//! - `files`: file records, listing with row-level security, patch, delete.
//! - `uploads`: keys issued by presign / multipart init, and their sweeping.

mod files;
mod uploads;

use std::fmt;
use std::str::FromStr;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::edge::url::ObjectKey;

pub use files::{Direction, FileFilter, FilePatch, Listing, Reader, SortBy};
pub use uploads::UploadGrant;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database holds an invalid row: {0}")]
    Corrupt(String),
    #[error("a file with key {0} already exists")]
    DuplicateKey(String),
}

/// Who may read a file (SPEC §2.3). Only `Public` is ever served by the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Visibility {
    Public,
    #[default]
    Private,
    Protected,
    Shared,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Private => "private",
            Visibility::Protected => "protected",
            Visibility::Shared => "shared",
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Visibility::Public),
            "private" => Ok(Visibility::Private),
            "protected" => Ok(Visibility::Protected),
            "shared" => Ok(Visibility::Shared),
            other => Err(format!(
                "unknown visibility `{other}`, expected public, private, protected or shared"
            )),
        }
    }
}

/// Who owns a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerType {
    User,
    Session,
    Service,
    Public,
}

impl OwnerType {
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerType::User => "user",
            OwnerType::Session => "session",
            OwnerType::Service => "service",
            OwnerType::Public => "public",
        }
    }
}

impl FromStr for OwnerType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(OwnerType::User),
            "session" => Ok(OwnerType::Session),
            "service" => Ok(OwnerType::Service),
            "public" => Ok(OwnerType::Public),
            other => Err(format!(
                "unknown owner type `{other}`, expected user, session, service or public"
            )),
        }
    }
}

/// One file's metadata as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub id: String,
    pub project: String,
    pub key: ObjectKey,
    pub original_name: String,
    pub mime_type: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub visibility: Visibility,
    pub bucket: String,
    pub owner_id: String,
    pub owner_type: OwnerType,
    pub metadata: serde_json::Value,
    pub shared_with: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// What a caller supplies to create a file record; the store adds id and timestamps.
#[derive(Debug, Clone)]
pub struct NewFile {
    pub project: String,
    pub key: ObjectKey,
    pub original_name: String,
    pub mime_type: String,
    pub size: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub visibility: Visibility,
    pub owner_id: String,
    pub owner_type: OwnerType,
}

/// The optional parts of a registration (`POST /v1/files`).
#[derive(Debug, Clone, Default)]
pub struct FileExtras {
    pub bucket: String,
    pub metadata: Option<serde_json::Value>,
    pub shared_with: Vec<String>,
}

/// The configured metadata store.
#[derive(Debug, Clone)]
pub enum Db {
    Sqlite(SqlitePool),
}

impl Db {
    /// Connects and runs migrations. `sqlite://path` creates the file when missing and uses
    /// WAL with `synchronous=FULL`, so a committed row survives a crash.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Db::Sqlite(pool))
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), DbError> {
        let Db::Sqlite(pool) = self;
        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        let Db::Sqlite(pool) = self;
        pool.close().await;
    }
}

pub(crate) fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("invariant: a UTC timestamp formats as RFC 3339")
}

pub(crate) fn parse_time(text: &str, what: &str) -> Result<OffsetDateTime, DbError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| DbError::Corrupt(format!("{what}: {e}")))
}

pub(crate) fn parse_enum<T: FromStr<Err = String>>(text: &str) -> Result<T, DbError> {
    text.parse().map_err(DbError::Corrupt)
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
