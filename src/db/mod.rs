//! The metadata store: the only module that holds SQL. `Db` is a closed enum over the
//! engines (SQLite, the embedded default; PostgreSQL, for several nodes) with one typed
//! query per operation. Migrations run when the store is opened.
//!
//! Each query is written once, in the SQL both engines accept (`$N` placeholders,
//! `ON CONFLICT DO NOTHING`, `TRUE`/`FALSE`), and `on_pool!` compiles it for each engine.
//!
//! - `files`: file records, listing with row-level security, patch, delete.
//! - `derivatives`: which files still need reduced copies, claims, and the edge's view.
//! - `uploads`: keys issued by presign / multipart init, and their sweeping.
//! - `deletions`: objects still to remove after their file's row was deleted (an outbox).
//! - Change announcements: with PostgreSQL, every change to a file's visibility or
//!   existence is announced with `NOTIFY` on `PURGE_CHANNEL` inside the transaction that
//!   makes it (`Announce`), so other nodes drop their cached view of it at once
//!   (`PurgeListener`) and no announcement is lost between commit and notify.

mod deletions;
mod derivatives;
mod files;
mod uploads;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::key::ObjectKey;

pub use deletions::PendingDeletion;
pub use derivatives::{Claim, Derivatives, EdgeFacts};
pub use files::{Direction, FileFilter, FilePatch, Listing, Reader, SortBy};
pub use uploads::UploadGrant;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The PostgreSQL channel on which changed keys are announced.
pub const PURGE_CHANNEL: &str = "imgedge_purge";

/// How long a query waits for a pooled connection before failing (the store is down or
/// saturated); requests fail promptly instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs `$body` with `$pool` bound to the engine's pool; the body is compiled once per
/// engine, so one query text serves both.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

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
    Postgres(PgPool),
}

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Longest `bucket` label.
pub const MAX_BUCKET: usize = 63;

/// Checks a file's `bucket`: the app's own grouping label (`images`, `avatars`, ...), 1 to
/// 63 of `a-z 0-9 . _ -`. It says nothing about where the object is stored.
pub fn check_bucket(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_BUCKET {
        return Err(format!(
            "must be 1 to {MAX_BUCKET} characters, got {}",
            name.chars().count()
        ));
    }
    match name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        Some(c) => Err(format!(
            "may hold only lower-case letters, digits, `.`, `_` and `-`, not {:?}",
            c
        )),
        None => Ok(()),
    }
}

impl Db {
    /// Connects and runs migrations.
    /// - `sqlite://path` creates the file when missing and uses WAL with
    ///   `synchronous=FULL`, so a committed row survives a crash.
    /// - `postgres://…` runs the PostgreSQL migrations (under the migrator's advisory lock,
    ///   so nodes starting together do not race).
    pub async fn open(url: &str) -> Result<Db, DbError> {
        if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url)?.application_name("imgedge");
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            POSTGRES_MIGRATIONS.run(&pool).await?;
            return Ok(Db::Postgres(pool));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATIONS.run(&pool).await?;
        Ok(Db::Sqlite(pool))
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// The engine's own consistency check: SQLite's `integrity_check` and
    /// `foreign_key_check`, each problem one line (empty: sound). PostgreSQL has no such
    /// check for a whole database; a round trip is all that is asked of it here.
    pub async fn integrity_problems(&self) -> Result<Vec<String>, DbError> {
        match self {
            Db::Sqlite(pool) => {
                let mut problems: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(pool)
                    .await?;
                problems.retain(|p| p != "ok");
                let orphans: Vec<(String, i64, String, i64)> =
                    sqlx::query_as("PRAGMA foreign_key_check")
                        .fetch_all(pool)
                        .await?;
                problems.extend(orphans.into_iter().map(|(table, row, parent, _)| {
                    format!("row {row} of {table} points to a missing row of {parent}")
                }));
                Ok(problems)
            }
            Db::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
                Ok(Vec::new())
            }
        }
    }

    /// Which engine this is, for messages.
    pub fn engine(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
    }

    /// Subscribes to other nodes' change announcements; `None` with SQLite.
    pub async fn purge_listener(&self) -> Result<Option<PurgeListener>, DbError> {
        let Db::Postgres(pool) = self else {
            return Ok(None);
        };
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(PURGE_CHANNEL).await?;
        Ok(Some(PurgeListener { listener }))
    }
}

/// Announces, inside a writing transaction, that `key` changed (visibility, existence,
/// reduced copies), so other nodes drop their cached view of it. PostgreSQL holds a
/// `NOTIFY` until the transaction commits and then delivers it, so a change and its
/// announcement are one: neither goes out without the other, whatever happens to this
/// node in between. A no-op with SQLite, which serves one node.
pub(crate) trait Announce {
    async fn announce(&mut self, key: &ObjectKey) -> Result<(), sqlx::Error>;
}

impl Announce for sqlx::Transaction<'_, sqlx::Postgres> {
    async fn announce(&mut self, key: &ObjectKey) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(PURGE_CHANNEL)
            .bind(key.as_str())
            .execute(&mut **self)
            .await?;
        Ok(())
    }
}

impl Announce for sqlx::Transaction<'_, sqlx::Sqlite> {
    async fn announce(&mut self, _key: &ObjectKey) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

/// What a `PurgeListener` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeEvent {
    /// This key changed on some node.
    Changed(ObjectKey),
    /// The connection dropped, so announcements may have been missed; the listener
    /// reconnects on the next call.
    Lost,
}

/// A live subscription to `PURGE_CHANNEL`.
pub struct PurgeListener {
    listener: PgListener,
}

impl fmt::Debug for PurgeListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurgeListener").finish_non_exhaustive()
    }
}

impl PurgeListener {
    /// The next announcement. An error means reconnecting failed; calling again retries.
    pub async fn next(&mut self) -> Result<PurgeEvent, DbError> {
        loop {
            match self.listener.try_recv().await? {
                None => return Ok(PurgeEvent::Lost),
                Some(n) => match ObjectKey::parse(n.payload()) {
                    Ok(key) => return Ok(PurgeEvent::Changed(key)),
                    Err(e) => {
                        tracing::warn!(payload = n.payload(), error = %e, "ignored a bad purge");
                    }
                },
            }
        }
    }
}

/// Fixed-width RFC 3339 in UTC with microseconds, so text order is time order on every
/// engine.
pub(crate) fn format_time(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .expect("invariant: a UTC timestamp formats")
}

pub(crate) fn parse_time(text: &str, what: &str) -> Result<OffsetDateTime, DbError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| DbError::Corrupt(format!("{what}: {e}")))
}

/// A key read back from the store (it was valid when written).
pub(crate) fn stored_key(text: &str) -> Result<ObjectKey, DbError> {
    ObjectKey::parse(text).map_err(|e| DbError::Corrupt(format!("stored key {text:?}: {e}")))
}

pub(crate) fn parse_enum<T: FromStr<Err = String>>(text: &str) -> Result<T, DbError> {
    text.parse().map_err(DbError::Corrupt)
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
