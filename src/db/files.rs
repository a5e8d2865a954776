//! File records: lookups for the edge, registration, listing with row-level security,
//! partial updates and deletion.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{
    Db, DbError, FileExtras, FileRecord, NewFile, OwnerType, Visibility, format_time, now,
    parse_enum, parse_time,
};
use crate::edge::url::ObjectKey;

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
}

impl SortBy {
    fn column(self) -> &'static str {
        match self {
            SortBy::CreatedAt => "created_at",
            SortBy::UpdatedAt => "updated_at",
            SortBy::OriginalName => "original_name",
            SortBy::Size => "size",
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
     updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

impl Db {
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
        self.with_shares(row).await
    }

    /// A file of `project` by id.
    pub async fn find_by_id(&self, project: &str, id: &str) -> Result<Option<FileRecord>, DbError> {
        let Db::Sqlite(pool) = self;
        let row = sqlx::query("SELECT * FROM files WHERE id = ? AND project = ?")
            .bind(id)
            .bind(project)
            .fetch_optional(pool)
            .await?;
        self.with_shares(row).await
    }

    async fn with_shares(&self, row: Option<SqliteRow>) -> Result<Option<FileRecord>, DbError> {
        let Some(row) = row else { return Ok(None) };
        let mut rec = record_from_row(&row)?;
        rec.shared_with = self.shares_of(&rec.id).await?;
        Ok(Some(rec))
    }

    async fn shares_of(&self, file_id: &str) -> Result<Vec<String>, DbError> {
        let Db::Sqlite(pool) = self;
        let rows =
            sqlx::query("SELECT user_id FROM file_shares WHERE file_id = ? ORDER BY user_id")
                .bind(file_id)
                .fetch_all(pool)
                .await?;
        Ok(rows.iter().map(|r| r.get("user_id")).collect())
    }

    /// Loads `shared_with` for a page of records in one query (not one per record).
    async fn fill_shares(&self, items: &mut [FileRecord]) -> Result<(), DbError> {
        if items.is_empty() {
            return Ok(());
        }
        let Db::Sqlite(pool) = self;
        let mut q: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT file_id, user_id FROM file_shares WHERE file_id IN (");
        let mut ids = q.separated(", ");
        for rec in items.iter() {
            ids.push_bind(rec.id.clone());
        }
        q.push(") ORDER BY user_id");
        for row in q.build().fetch_all(pool).await? {
            let file_id: String = row.get("file_id");
            if let Some(rec) = items.iter_mut().find(|r| r.id == file_id) {
                rec.shared_with.push(row.get("user_id"));
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
        let Db::Sqlite(pool) = self;
        let id = uuid::Uuid::new_v4().to_string();
        let stamp = format_time(now());
        let metadata = extras
            .metadata
            .unwrap_or_else(|| serde_json::json!({}))
            .to_string();
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
            sqlx::query("INSERT OR IGNORE INTO file_shares (file_id, user_id) VALUES (?, ?)")
                .bind(&id)
                .bind(user)
                .execute(&mut *tx)
                .await?;
        }
        if consume_upload {
            sqlx::query("UPDATE uploads SET registered = 1 WHERE key = ?")
                .bind(new.key.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        .bind(format_time(now()))
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
            .bind(format_time(now()))
            .bind(key.as_str())
            .execute(pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Applies a partial update and returns the new record (`None`: no such file).
    pub async fn update_file(
        &self,
        project: &str,
        id: &str,
        patch: FilePatch,
    ) -> Result<Option<FileRecord>, DbError> {
        let Db::Sqlite(pool) = self;
        let mut tx = pool.begin().await?;
        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("UPDATE files SET updated_at = ");
        q.push_bind(format_time(now()));
        if let Some(name) = &patch.original_name {
            q.push(", original_name = ").push_bind(name);
        }
        if let Some(v) = patch.visibility {
            q.push(", visibility = ").push_bind(v.as_str());
        }
        if let Some(m) = &patch.metadata {
            q.push(", metadata = ").push_bind(m.to_string());
        }
        q.push(" WHERE id = ").push_bind(id);
        q.push(" AND project = ").push_bind(project);
        let done = q.build().execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        if let Some(users) = &patch.shared_with {
            sqlx::query("DELETE FROM file_shares WHERE file_id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for user in users {
                sqlx::query("INSERT OR IGNORE INTO file_shares (file_id, user_id) VALUES (?, ?)")
                    .bind(id)
                    .bind(user)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        self.find_by_id(project, id).await
    }

    /// Deletes a file record (and its shares and upload grant); returns what was deleted.
    pub async fn delete_file(
        &self,
        project: &str,
        id: &str,
    ) -> Result<Option<FileRecord>, DbError> {
        let Some(rec) = self.find_by_id(project, id).await? else {
            return Ok(None);
        };
        let Db::Sqlite(pool) = self;
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM files WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM uploads WHERE key = ?")
            .bind(rec.key.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(rec))
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
        let Db::Sqlite(pool) = self;
        let mut count: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT COUNT(*) FROM files");
        push_scope(&mut count, project, reader, filter);
        let total: i64 = count.build().fetch_one(pool).await?.get(0);

        let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM files");
        push_scope(&mut q, project, reader, filter);
        let dir = match direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        // `id` breaks ties so pages never overlap or skip rows.
        q.push(format!(" ORDER BY {} {dir}, id {dir}", sort.column()));
        q.push(" LIMIT ").push_bind(i64::from(limit));
        q.push(" OFFSET ")
            .push_bind(i64::from(page.saturating_sub(1)) * i64::from(limit));
        let rows = q.build().fetch_all(pool).await?;
        let mut items = rows
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.fill_shares(&mut items).await?;
        Ok(Listing {
            items,
            total: u64::try_from(total).unwrap_or(0),
        })
    }
}

/// `WHERE` clause: project, row-level security for `reader`, then the filters.
fn push_scope(q: &mut QueryBuilder<Sqlite>, project: &str, reader: &Reader, f: &FileFilter) {
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
        q.push(" AND visibility = ").push_bind(v.as_str());
    }
    if let Some(t) = f.owner_type {
        q.push(" AND owner_type = ").push_bind(t.as_str());
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
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" AND original_name LIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\'");
    }
}

fn record_from_row(row: &SqliteRow) -> Result<FileRecord, DbError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| DbError::Corrupt(format!("{what}: {e}"));
    let key: String = row.get("s3_key");
    let dim = |col: &str| -> Result<Option<u32>, DbError> {
        let v: Option<i64> = row.get(col);
        v.map(|v| u32::try_from(v).map_err(|e| corrupt(col, &e)))
            .transpose()
    };
    let size: i64 = row.get("size");
    let metadata: String = row.get("metadata");
    let created: String = row.get("created_at");
    let updated: String = row.get("updated_at");
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
        shared_with: Vec::new(),
        created_at: parse_time(&created, "created_at")?,
        updated_at: parse_time(&updated, "updated_at")?,
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
