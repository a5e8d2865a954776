//! Upload grants: every key handed out by presign or multipart init, with who it was issued
//! to and the limits it was issued with. Registration consumes a grant; grants never
//! registered are swept, with their objects, after `upload_ttl_secs`.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use super::{Db, DbError, OwnerType, Visibility, format_time, parse_enum, parse_time};
use crate::edge::url::ObjectKey;

#[derive(Debug, Clone, PartialEq)]
pub struct UploadGrant {
    pub key: ObjectKey,
    pub project: String,
    pub owner_id: String,
    pub owner_type: OwnerType,
    pub filename: String,
    pub content_type: String,
    /// Largest accepted object, from the declared size or the category limit.
    pub max_size: u64,
    pub category: String,
    /// Visibility asked for when presigning: the default at registration.
    pub visibility: Visibility,
    /// The upload id of a multipart upload.
    pub multipart_id: Option<String>,
    pub completed: bool,
    pub registered: bool,
    pub created_at: OffsetDateTime,
}

impl Db {
    pub async fn insert_upload(&self, grant: &UploadGrant) -> Result<(), DbError> {
        let Db::Sqlite(pool) = self;
        let inserted = sqlx::query(
            "INSERT INTO uploads (key, project, owner_id, owner_type, filename, content_type, \
             max_size, category, visibility, multipart_id, completed, registered, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(grant.key.as_str())
        .bind(&grant.project)
        .bind(&grant.owner_id)
        .bind(grant.owner_type.as_str())
        .bind(&grant.filename)
        .bind(&grant.content_type)
        .bind(grant.max_size as i64)
        .bind(&grant.category)
        .bind(grant.visibility.as_str())
        .bind(&grant.multipart_id)
        .bind(grant.completed)
        .bind(grant.registered)
        .bind(format_time(grant.created_at))
        .execute(pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DbError::DuplicateKey(grant.key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn find_upload(&self, key: &ObjectKey) -> Result<Option<UploadGrant>, DbError> {
        let Db::Sqlite(pool) = self;
        let row = sqlx::query("SELECT * FROM uploads WHERE key = ?")
            .bind(key.as_str())
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    pub async fn mark_upload_completed(&self, key: &ObjectKey) -> Result<(), DbError> {
        let Db::Sqlite(pool) = self;
        sqlx::query("UPDATE uploads SET completed = 1 WHERE key = ?")
            .bind(key.as_str())
            .execute(pool)
            .await?;
        Ok(())
    }

    pub async fn delete_upload(&self, key: &ObjectKey) -> Result<(), DbError> {
        let Db::Sqlite(pool) = self;
        sqlx::query("DELETE FROM uploads WHERE key = ?")
            .bind(key.as_str())
            .execute(pool)
            .await?;
        Ok(())
    }

    /// Grants issued before `cutoff` and never registered, oldest first, at most `limit`.
    pub async fn stale_uploads(
        &self,
        cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<UploadGrant>, DbError> {
        let Db::Sqlite(pool) = self;
        let rows = sqlx::query(
            "SELECT * FROM uploads WHERE registered = 0 AND created_at < ? \
             ORDER BY created_at LIMIT ?",
        )
        .bind(format_time(cutoff))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
        rows.iter().map(grant_from_row).collect()
    }
}

fn grant_from_row(row: &SqliteRow) -> Result<UploadGrant, DbError> {
    let key: String = row.get("key");
    let max_size: i64 = row.get("max_size");
    let created: String = row.get("created_at");
    Ok(UploadGrant {
        key: ObjectKey::parse(&key).map_err(|e| DbError::Corrupt(format!("uploads.key: {e}")))?,
        project: row.get("project"),
        owner_id: row.get("owner_id"),
        owner_type: parse_enum(row.get("owner_type"))?,
        filename: row.get("filename"),
        content_type: row.get("content_type"),
        max_size: u64::try_from(max_size).map_err(|e| DbError::Corrupt(e.to_string()))?,
        category: row.get("category"),
        visibility: parse_enum(row.get("visibility"))?,
        multipart_id: row.get("multipart_id"),
        completed: row.get("completed"),
        registered: row.get("registered"),
        created_at: parse_time(&created, "uploads.created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    #[tokio::test]
    async fn grants_round_trip_and_stale_ones_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        let now = OffsetDateTime::now_utc();
        let grant = |key: &str, age: i64| UploadGrant {
            key: ObjectKey::parse(key).unwrap(),
            project: "p".into(),
            owner_id: "u".into(),
            owner_type: OwnerType::User,
            filename: "a.jpg".into(),
            content_type: "image/jpeg".into(),
            max_size: 100,
            category: "images".into(),
            visibility: crate::db::Visibility::Public,
            multipart_id: None,
            completed: false,
            registered: false,
            created_at: now - Duration::hours(age),
        };
        db.insert_upload(&grant("old.jpg", 48)).await.unwrap();
        db.insert_upload(&grant("new.jpg", 0)).await.unwrap();
        assert!(matches!(
            db.insert_upload(&grant("new.jpg", 0)).await,
            Err(DbError::DuplicateKey(_))
        ));
        let found = db
            .find_upload(&ObjectKey::parse("new.jpg").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.max_size, 100);
        let stale = db
            .stale_uploads(now - Duration::hours(24), 10)
            .await
            .unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].key.as_str(), "old.jpg");
    }
}
