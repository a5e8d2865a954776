//! File records: lookups for the edge, registration, listing with row-level security,
//! partial updates and deletion.

use sqlx::QueryBuilder;

use super::{
    Announce, Db, DbError, FileExtras, FileRecord, NewFile, OwnerType, PendingDeletion, Visibility,
    format_time, now, on_pool, parse_enum, parse_time, stored_key,
};
use crate::key::ObjectKey;

/// Whose eyes a listing is for (SPEC §2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reader {
    /// A publishable key without a token: public files only.
    Anonymous,
    /// An authenticated user: own files, public, protected, and shared with them.
    User(String),
    /// A secret key: every file of the project.
    Service,
}

/// Optional equality filters and a name search for listings.
#[derive(Debug, Clone, Default)]
pub struct FileFilter {
    pub visibility: Option<Visibility>,
    pub owner_type: Option<OwnerType>,
    pub owner_id: Option<String>,
    pub bucket: Option<String>,
    pub mime_type: Option<String>,
    /// Case-insensitive substring of the original name.
    pub search: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    CreatedAt,
    UpdatedAt,
    OriginalName,
    Size,
    Bucket,
    MimeType,
}

impl SortBy {
    fn column(self) -> &'static str {
        match self {
            SortBy::CreatedAt => "created_at",
            SortBy::UpdatedAt => "updated_at",
            SortBy::OriginalName => "original_name",
            SortBy::Size => "size",
            SortBy::Bucket => "bucket",
            SortBy::MimeType => "mime_type",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    Asc,
    #[default]
    Desc,
}

/// One page of a listing and the total number of matching rows.
#[derive(Debug, Clone)]
pub struct Listing {
    pub items: Vec<FileRecord>,
    pub total: u64,
}

/// A partial update; `metadata` is the already-merged document.
#[derive(Debug, Clone, Default)]
pub struct FilePatch {
    pub original_name: Option<String>,
    pub visibility: Option<Visibility>,
    pub metadata: Option<serde_json::Value>,
    pub shared_with: Option<Vec<String>>,
}

const INSERT_FILE: &str = "INSERT INTO files (id, project, s3_key, original_name, mime_type, \
     size, width, height, visibility, bucket, owner_id, owner_type, metadata, created_at, \
     updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

const INSERT_SHARE: &str =
    "INSERT INTO file_shares (file_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// A `files` row as both engines return it.
#[derive(sqlx::FromRow)]
struct FileRow {
    id: String,
    project: String,
    s3_key: String,
    original_name: String,
    mime_type: String,
    size: i64,
    width: Option<i64>,
    height: Option<i64>,
    visibility: String,
    bucket: String,
    owner_id: String,
    owner_type: String,
    metadata: String,
    created_at: String,
    updated_at: String,
}

impl Db {
    /// The visibility of the file stored under `key`, or `None` when there is no such file.
    pub async fn visibility_of(&self, key: &ObjectKey) -> Result<Option<Visibility>, DbError> {
        let found: Option<String> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT visibility FROM files WHERE s3_key = $1")
                .bind(key.as_str())
                .fetch_optional(pool)
                .await?
        });
        found.map(|v| parse_enum::<Visibility>(&v)).transpose()
    }

    pub async fn find_by_key(&self, key: &ObjectKey) -> Result<Option<FileRecord>, DbError> {
        let row: Option<FileRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM files WHERE s3_key = $1")
                .bind(key.as_str())
                .fetch_optional(pool)
                .await?
        });
        self.with_shares(row).await
    }

    /// A file of `project` by id.
    pub async fn find_by_id(&self, project: &str, id: &str) -> Result<Option<FileRecord>, DbError> {
        let row: Option<FileRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM files WHERE id = $1 AND project = $2")
                .bind(id)
                .bind(project)
                .fetch_optional(pool)
                .await?
        });
        self.with_shares(row).await
    }

    async fn with_shares(&self, row: Option<FileRow>) -> Result<Option<FileRecord>, DbError> {
        let Some(row) = row else { return Ok(None) };
        let mut rec = record_from_row(row)?;
        self.fill_shares(std::slice::from_mut(&mut rec)).await?;
        Ok(Some(rec))
    }

    /// Loads `shared_with` for a page of records in one query (not one per record).
    async fn fill_shares(&self, items: &mut [FileRecord]) -> Result<(), DbError> {
        if items.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(String, String)> = on_pool!(self, pool => {
            let mut q = QueryBuilder::new("SELECT file_id, user_id FROM file_shares WHERE file_id IN (");
            let mut ids = q.separated(", ");
            for rec in items.iter() {
                ids.push_bind(rec.id.clone());
            }
            q.push(") ORDER BY user_id");
            q.build_query_as().fetch_all(pool).await?
        });
        for (file_id, user_id) in pairs {
            if let Some(rec) = items.iter_mut().find(|r| r.id == file_id) {
                rec.shared_with.push(user_id);
            }
        }
        Ok(())
    }

    /// Inserts a new record (import, demo); a second record for a key is `DuplicateKey`.
    pub async fn insert_file(&self, new: NewFile) -> Result<FileRecord, DbError> {
        self.register_file(new, FileExtras::default(), false).await
    }

    /// Inserts a record with its extras and shares in one transaction; with
    /// `consume_upload`, also marks the key's upload grant as registered.
    pub async fn register_file(
        &self,
        new: NewFile,
        extras: FileExtras,
        consume_upload: bool,
    ) -> Result<FileRecord, DbError> {
        let id = uuid::Uuid::new_v4().to_string();
        let stamp = format_time(now());
        let metadata = extras
            .metadata
            .unwrap_or_else(|| serde_json::json!({}))
            .to_string();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(INSERT_FILE)
                .bind(&id)
                .bind(&new.project)
                .bind(new.key.as_str())
                .bind(&new.original_name)
                .bind(&new.mime_type)
                .bind(new.size as i64)
                .bind(new.width.map(i64::from))
                .bind(new.height.map(i64::from))
                .bind(new.visibility.as_str())
                .bind(&extras.bucket)
                .bind(&new.owner_id)
                .bind(new.owner_type.as_str())
                .bind(&metadata)
                .bind(&stamp)
                .bind(&stamp)
                .execute(&mut *tx)
                .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(DbError::DuplicateKey(new.key.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
            for user in &extras.shared_with {
                sqlx::query(INSERT_SHARE)
                    .bind(&id)
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
            }
            if consume_upload {
                sqlx::query("UPDATE uploads SET registered = TRUE WHERE key = $1")
                    .bind(new.key.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        self.find_by_key(&new.key)
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("inserted row {id} vanished")))
    }

    /// Updates the stored facts (size, type, dimensions, visibility) of an existing record;
    /// its derivatives are to be built again.
    pub async fn refresh_file(&self, new: &NewFile) -> Result<(), DbError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE files SET size = $1, mime_type = $2, width = $3, height = $4, \
                 visibility = $5, updated_at = $6, derivatives = NULL WHERE s3_key = $7",
            )
            .bind(new.size as i64)
            .bind(&new.mime_type)
            .bind(new.width.map(i64::from))
            .bind(new.height.map(i64::from))
            .bind(new.visibility.as_str())
            .bind(format_time(now()))
            .bind(new.key.as_str())
            .execute(&mut *tx)
            .await?;
            tx.announce(&new.key).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Changes a file's visibility; returns whether a row was updated.
    pub async fn set_visibility(
        &self,
        key: &ObjectKey,
        visibility: Visibility,
    ) -> Result<bool, DbError> {
        let done = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE files SET visibility = $1, updated_at = $2 WHERE s3_key = $3")
                .bind(visibility.as_str())
                .bind(format_time(now()))
                .bind(key.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done > 0 {
                tx.announce(key).await?;
            }
            tx.commit().await?;
            done
        });
        Ok(done > 0)
    }

    /// Applies a partial update and returns the new record (`None`: no such file).
    pub async fn update_file(
        &self,
        project: &str,
        id: &str,
        patch: FilePatch,
    ) -> Result<Option<FileRecord>, DbError> {
        let updated = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut q = QueryBuilder::new("UPDATE files SET updated_at = ");
            q.push_bind(format_time(now()));
            if let Some(name) = &patch.original_name {
                q.push(", original_name = ").push_bind(name.clone());
            }
            if let Some(v) = patch.visibility {
                q.push(", visibility = ").push_bind(v.as_str().to_owned());
            }
            if let Some(m) = &patch.metadata {
                q.push(", metadata = ").push_bind(m.to_string());
            }
            q.push(" WHERE id = ").push_bind(id.to_owned());
            q.push(" AND project = ").push_bind(project.to_owned());
            q.push(" RETURNING s3_key");
            let key: Option<String> = q.build_query_scalar().fetch_optional(&mut *tx).await?;
            if let Some(key) = &key {
                if let Some(users) = &patch.shared_with {
                    sqlx::query("DELETE FROM file_shares WHERE file_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    for user in users {
                        sqlx::query(INSERT_SHARE)
                            .bind(id)
                            .bind(user)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.announce(&stored_key(key)?).await?;
                tx.commit().await?;
            }
            key.is_some()
        });
        if !updated {
            return Ok(None);
        }
        self.find_by_id(project, id).await
    }

    /// Deletes a file record (and its shares and upload grant) and, in the same
    /// transaction, queues its objects for removal (`object_deletions`); returns what was
    /// deleted. The caller removes the objects and then calls `forget_deletion`; if it
    /// cannot, housekeeping does (`pending_deletions`).
    pub async fn delete_file(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<PendingDeletion>, DbError> {
        let stamp = format_time(now());
        let deleted: Option<(String, Option<String>)> = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<(String, Option<String>)> = sqlx::query_as(
                "DELETE FROM files WHERE id = $1 AND project = $2 RETURNING s3_key, derivatives",
            )
            .bind(id)
            .bind(project)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((key, derivatives)) = &row {
                sqlx::query("DELETE FROM uploads WHERE key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO object_deletions (key, derivatives, requested_at) \
                     VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE \
                     SET derivatives = excluded.derivatives, requested_at = excluded.requested_at",
                )
                .bind(key)
                .bind(derivatives)
                .bind(&stamp)
                .execute(&mut *tx)
                .await?;
                tx.announce(&stored_key(key)?).await?;
                tx.commit().await?;
            }
            row
        });
        deleted
            .map(|(key, derivatives)| PendingDeletion::from_row(&key, derivatives))
            .transpose()
    }

    /// Every file's key, registered size and derivatives value, in key order, `limit` at a
    /// time after `after` (for `imgedge check`).
    pub async fn stored_objects(
        &self,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(ObjectKey, u64, Option<String>)>, DbError> {
        let rows: Vec<(String, i64, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT s3_key, size, derivatives FROM files WHERE s3_key > $1 \
                 ORDER BY s3_key LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(key, size, derivatives)| {
                Ok((
                    stored_key(&key)?,
                    u64::try_from(size).unwrap_or(0),
                    derivatives,
                ))
            })
            .collect()
    }

    /// Keys of public images of every project, in key order, `limit` at a time after
    /// `after` (for the playground's picker).
    pub async fn public_images(&self, after: &str, limit: u32) -> Result<Vec<ObjectKey>, DbError> {
        let keys: Vec<String> = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT s3_key FROM files WHERE visibility = 'public' \
                 AND mime_type LIKE 'image/%' AND s3_key > $1 ORDER BY s3_key LIMIT $2",
            )
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        keys.iter().map(|key| stored_key(key)).collect()
    }

    /// One page of the files `reader` may see in `project`, filtered and sorted.
    #[allow(clippy::too_many_arguments)]
    pub async fn list_files(
        &self,
        project: &str,
        reader: &Reader,
        filter: &FileFilter,
        sort: SortBy,
        direction: Direction,
        page: u32,
        limit: u32,
    ) -> Result<Listing, DbError> {
        let dir = match direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        let (total, rows): (i64, Vec<FileRow>) = on_pool!(self, pool => {
            let mut count = QueryBuilder::new("SELECT COUNT(*) FROM files");
            push_scope(&mut count, project, reader, filter);
            let total: i64 = count.build_query_scalar().fetch_one(pool).await?;

            let mut q = QueryBuilder::new("SELECT * FROM files");
            push_scope(&mut q, project, reader, filter);
            // `id` breaks ties so pages never overlap or skip rows.
            q.push(format!(" ORDER BY {} {dir}, id {dir}", sort.column()));
            q.push(" LIMIT ").push_bind(i64::from(limit));
            q.push(" OFFSET ")
                .push_bind(i64::from(page.saturating_sub(1)) * i64::from(limit));
            (total, q.build_query_as().fetch_all(pool).await?)
        });
        let mut items = rows
            .into_iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.fill_shares(&mut items).await?;
        Ok(Listing {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }
}

/// `WHERE` clause: project, row-level security for `reader`, then the filters. Every
/// bound value is a `String`, which both engines encode.
fn push_scope<DB>(q: &mut QueryBuilder<DB>, project: &str, reader: &Reader, f: &FileFilter)
where
    DB: sqlx::Database,
    for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    q.push(" WHERE project = ").push_bind(project.to_owned());
    match reader {
        Reader::Service => {}
        Reader::Anonymous => {
            q.push(" AND visibility = 'public'");
        }
        Reader::User(user) => {
            q.push(" AND ((owner_type = 'user' AND owner_id = ")
                .push_bind(user.clone())
                .push(") OR visibility IN ('public', 'protected') OR (visibility = 'shared' AND EXISTS (SELECT 1 FROM file_shares s WHERE s.file_id = files.id AND s.user_id = ")
                .push_bind(user.clone())
                .push(")))");
        }
    }
    if let Some(v) = f.visibility {
        q.push(" AND visibility = ")
            .push_bind(v.as_str().to_owned());
    }
    if let Some(t) = f.owner_type {
        q.push(" AND owner_type = ")
            .push_bind(t.as_str().to_owned());
    }
    if let Some(o) = &f.owner_id {
        q.push(" AND owner_id = ").push_bind(o.clone());
    }
    if let Some(b) = &f.bucket {
        q.push(" AND bucket = ").push_bind(b.clone());
    }
    if let Some(m) = &f.mime_type {
        q.push(" AND mime_type = ").push_bind(m.clone());
    }
    if let Some(s) = &f.search {
        let escaped = s
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        // lower() on both sides: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
        q.push(" AND lower(original_name) LIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\'");
    }
}

fn record_from_row(row: FileRow) -> Result<FileRecord, DbError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| DbError::Corrupt(format!("{what}: {e}"));
    let dim = |col: &str, v: Option<i64>| -> Result<Option<u32>, DbError> {
        v.map(|v| u32::try_from(v).map_err(|e| corrupt(col, &e)))
            .transpose()
    };
    Ok(FileRecord {
        key: ObjectKey::parse(&row.s3_key).map_err(|e| corrupt("s3_key", &e))?,
        size: u64::try_from(row.size).map_err(|e| corrupt("size", &e))?,
        width: dim("width", row.width)?,
        height: dim("height", row.height)?,
        visibility: parse_enum(&row.visibility)?,
        owner_type: parse_enum(&row.owner_type)?,
        metadata: serde_json::from_str(&row.metadata).map_err(|e| corrupt("metadata", &e))?,
        shared_with: Vec::new(),
        created_at: parse_time(&row.created_at, "created_at")?,
        updated_at: parse_time(&row.updated_at, "updated_at")?,
        id: row.id,
        project: row.project,
        original_name: row.original_name,
        mime_type: row.mime_type,
        bucket: row.bucket,
        owner_id: row.owner_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file(key: &str, visibility: Visibility, owner: &str) -> NewFile {
        NewFile {
            project: "p".into(),
            key: ObjectKey::parse(key).unwrap(),
            original_name: format!("{key}.name"),
            mime_type: "image/jpeg".into(),
            size: 10,
            width: Some(4),
            height: Some(3),
            visibility,
            owner_id: owner.into(),
            owner_type: OwnerType::User,
        }
    }

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn insert_find_and_change_visibility() {
        let (_d, db) = db().await;
        let rec = db
            .insert_file(new_file("p/a.jpg", Visibility::Public, "u1"))
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
            db.insert_file(new_file("p/a.jpg", Visibility::Public, "u1"))
                .await,
            Err(DbError::DuplicateKey(_))
        ));
    }

    #[tokio::test]
    async fn reopening_keeps_rows() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Db::open(&url).await.unwrap();
        db.insert_file(new_file("k.jpg", Visibility::Shared, "u"))
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

    #[tokio::test]
    async fn listing_applies_row_level_security() {
        let (_d, db) = db().await;
        let files = [
            ("pub", Visibility::Public, "alice"),
            ("prot", Visibility::Protected, "alice"),
            ("priv-a", Visibility::Private, "alice"),
            ("priv-b", Visibility::Private, "bob"),
            ("shared-b", Visibility::Shared, "bob"),
        ];
        for (key, vis, owner) in files {
            let extras = FileExtras {
                shared_with: if key == "shared-b" {
                    vec!["carol".into()]
                } else {
                    vec![]
                },
                ..FileExtras::default()
            };
            db.register_file(new_file(key, vis, owner), extras, false)
                .await
                .unwrap();
        }
        let keys = |l: Listing| {
            let mut k: Vec<String> = l.items.iter().map(|r| r.key.to_string()).collect();
            k.sort();
            k
        };
        let list = |reader: Reader| {
            let db = db.clone();
            async move {
                db.list_files(
                    "p",
                    &reader,
                    &FileFilter::default(),
                    SortBy::CreatedAt,
                    Direction::Desc,
                    1,
                    100,
                )
                .await
                .unwrap()
            }
        };
        assert_eq!(keys(list(Reader::Anonymous).await), ["pub"]);
        assert_eq!(
            keys(list(Reader::User("alice".into())).await),
            ["priv-a", "prot", "pub"]
        );
        assert_eq!(
            keys(list(Reader::User("bob".into())).await),
            ["priv-b", "prot", "pub", "shared-b"]
        );
        assert_eq!(
            keys(list(Reader::User("carol".into())).await),
            ["prot", "pub", "shared-b"]
        );
        assert_eq!(list(Reader::Service).await.total, 5);
        // Another project sees nothing.
        let other = db
            .list_files(
                "q",
                &Reader::Service,
                &FileFilter::default(),
                SortBy::Size,
                Direction::Asc,
                1,
                10,
            )
            .await
            .unwrap();
        assert_eq!(other.total, 0);
    }

    #[tokio::test]
    async fn patch_merges_and_delete_removes() {
        let (_d, db) = db().await;
        let rec = db
            .insert_file(new_file("x.jpg", Visibility::Private, "u"))
            .await
            .unwrap();
        let patched = db
            .update_file(
                "p",
                &rec.id,
                FilePatch {
                    visibility: Some(Visibility::Shared),
                    shared_with: Some(vec!["v".into(), "w".into()]),
                    ..FilePatch::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(patched.visibility, Visibility::Shared);
        assert_eq!(patched.shared_with, ["v", "w"]);
        assert_eq!(patched.original_name, rec.original_name);
        assert!(
            db.update_file("other", &rec.id, FilePatch::default())
                .await
                .unwrap()
                .is_none()
        );
        assert!(db.delete_file("p", &rec.id).await.unwrap().is_some());
        assert!(db.find_by_id("p", &rec.id).await.unwrap().is_none());
        assert!(db.delete_file("p", &rec.id).await.unwrap().is_none());
    }
}
