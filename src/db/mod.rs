//! The metadata store: the only module that holds SQL. `Db` is a closed enum over the
//! engines (SQLite is the embedded default; PostgreSQL joins it later) with one typed
//! query per operation. Migrations run when the store is opened.

use std::fmt;
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::edge::url::ObjectKey;

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
            other => Err(format!("unknown owner type `{other}`")),
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
        match self {
            Db::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    /// The visibility of the file stored under `key`, or `None` when there is no such file.
    pub async fn visibility_of(&self, key: &ObjectKey) -> Result<Option<Visibility>, DbError> {
        let Db::Sqlite(pool) = self;
        let row = sqlx::query("SELECT visibility FROM files WHERE s3_key = ?")
            .bind(key.as_str())
            .fetch_optional(pool)
            .await?;
        row.map(|r| parse_enum::<Visibility>(r.get("visibility")))
            .transpose()
    }

    pub async fn find_by_key(&self, key: &ObjectKey) -> Result<Option<FileRecord>, DbError> {
        let Db::Sqlite(pool) = self;
        let row = sqlx::query("SELECT * FROM files WHERE s3_key = ?")
            .bind(key.as_str())
            .fetch_optional(pool)
            .await?;
        row.map(|r| record_from_row(&r)).transpose()
    }

    /// Inserts a new record; a second record for the same key is `DuplicateKey`.
    pub async fn insert_file(&self, new: NewFile) -> Result<FileRecord, DbError> {
        let Db::Sqlite(pool) = self;
        let now = OffsetDateTime::now_utc();
        let id = uuid::Uuid::new_v4().to_string();
        let stamp = format_time(now);
        let result = sqlx::query(
            "INSERT INTO files (id, project, s3_key, original_name, mime_type, size, width, \
             height, visibility, bucket, owner_id, owner_type, metadata, shared_with, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, '{}', '[]', ?, ?)",
        )
        .bind(&id)
        .bind(&new.project)
        .bind(new.key.as_str())
        .bind(&new.original_name)
        .bind(&new.mime_type)
        .bind(new.size as i64)
        .bind(new.width.map(i64::from))
        .bind(new.height.map(i64::from))
        .bind(new.visibility.as_str())
        .bind(&new.owner_id)
        .bind(new.owner_type.as_str())
        .bind(&stamp)
        .bind(&stamp)
        .execute(pool)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(DbError::DuplicateKey(new.key.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
        self.find_by_key(&new.key)
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("inserted row {id} vanished")))
    }

    /// Updates the stored facts (size, type, dimensions, visibility) of an existing record.
    pub async fn refresh_file(&self, new: &NewFile) -> Result<(), DbError> {
        let Db::Sqlite(pool) = self;
        sqlx::query(
            "UPDATE files SET size = ?, mime_type = ?, width = ?, height = ?, visibility = ?, \
             updated_at = ? WHERE s3_key = ?",
        )
        .bind(new.size as i64)
        .bind(&new.mime_type)
        .bind(new.width.map(i64::from))
        .bind(new.height.map(i64::from))
        .bind(new.visibility.as_str())
        .bind(format_time(OffsetDateTime::now_utc()))
        .bind(new.key.as_str())
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Changes a file's visibility; returns whether a row was updated.
    pub async fn set_visibility(
        &self,
        key: &ObjectKey,
        visibility: Visibility,
    ) -> Result<bool, DbError> {
        let Db::Sqlite(pool) = self;
        let done = sqlx::query("UPDATE files SET visibility = ?, updated_at = ? WHERE s3_key = ?")
            .bind(visibility.as_str())
            .bind(format_time(OffsetDateTime::now_utc()))
            .bind(key.as_str())
            .execute(pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn close(&self) {
        let Db::Sqlite(pool) = self;
        pool.close().await;
    }
}

fn format_time(t: OffsetDateTime) -> String {
    t.format(&Rfc3339)
        .expect("invariant: a UTC timestamp formats as RFC 3339")
}

fn parse_enum<T: FromStr<Err = String>>(text: &str) -> Result<T, DbError> {
    text.parse().map_err(DbError::Corrupt)
}

fn record_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<FileRecord, DbError> {
    let corrupt = |what: &str, e: &dyn fmt::Display| DbError::Corrupt(format!("{what}: {e}"));
    let key: String = row.get("s3_key");
    let time_of = |col: &str| {
        let text: String = row.get(col);
        OffsetDateTime::parse(&text, &Rfc3339).map_err(|e| corrupt(col, &e))
    };
    let dim = |col: &str| -> Result<Option<u32>, DbError> {
        let v: Option<i64> = row.get(col);
        v.map(|v| u32::try_from(v).map_err(|e| corrupt(col, &e)))
            .transpose()
    };
    let size: i64 = row.get("size");
    let metadata: String = row.get("metadata");
    let shared_with: String = row.get("shared_with");
    Ok(FileRecord {
        id: row.get("id"),
        project: row.get("project"),
        key: ObjectKey::parse(&key).map_err(|e| corrupt("s3_key", &e))?,
        original_name: row.get("original_name"),
        mime_type: row.get("mime_type"),
        size: u64::try_from(size).map_err(|e| corrupt("size", &e))?,
        width: dim("width")?,
        height: dim("height")?,
        visibility: parse_enum(row.get("visibility"))?,
        bucket: row.get("bucket"),
        owner_id: row.get("owner_id"),
        owner_type: parse_enum(row.get("owner_type"))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?,
        shared_with: serde_json::from_str(&shared_with).map_err(|e| corrupt("shared_with", &e))?,
        created_at: time_of("created_at")?,
        updated_at: time_of("updated_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file(key: &str, visibility: Visibility) -> NewFile {
        NewFile {
            project: "default".into(),
            key: ObjectKey::parse(key).unwrap(),
            original_name: "a.jpg".into(),
            mime_type: "image/jpeg".into(),
            size: 10,
            width: Some(4),
            height: Some(3),
            visibility,
            owner_id: "import".into(),
            owner_type: OwnerType::Service,
        }
    }

    #[tokio::test]
    async fn insert_find_and_change_visibility() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        let rec = db
            .insert_file(new_file("p/a.jpg", Visibility::Public))
            .await
            .unwrap();
        assert_eq!(rec.visibility, Visibility::Public);
        assert_eq!(rec.width, Some(4));
        let key = ObjectKey::parse("p/a.jpg").unwrap();
        assert_eq!(
            db.visibility_of(&key).await.unwrap(),
            Some(Visibility::Public)
        );
        assert!(db.set_visibility(&key, Visibility::Private).await.unwrap());
        assert_eq!(
            db.visibility_of(&key).await.unwrap(),
            Some(Visibility::Private)
        );
        let missing = ObjectKey::parse("p/none.jpg").unwrap();
        assert_eq!(db.visibility_of(&missing).await.unwrap(), None);
        assert!(matches!(
            db.insert_file(new_file("p/a.jpg", Visibility::Public))
                .await,
            Err(DbError::DuplicateKey(_))
        ));
    }

    #[tokio::test]
    async fn reopening_keeps_rows_and_skips_applied_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        db.insert_file(new_file("k.jpg", Visibility::Shared))
            .await
            .unwrap();
        db.close().await;
        let db = Db::open(&url).await.unwrap();
        let key = ObjectKey::parse("k.jpg").unwrap();
        assert_eq!(
            db.visibility_of(&key).await.unwrap(),
            Some(Visibility::Shared)
        );
    }
}
