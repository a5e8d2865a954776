//! Upload grants: every key handed out by presign or multipart init, with who it was issued
//! to and the limits it was issued with. Registration consumes a grant; grants never
//! registered are swept, with their objects, after `upload_ttl_secs`.

use time::OffsetDateTime;

use super::{Db, DbError, OwnerType, Visibility, format_time, on_pool, parse_enum, parse_time};
use crate::key::ObjectKey;

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

/// An `uploads` row as both engines return it.
#[derive(sqlx::FromRow)]
struct GrantRow {
    key: String,
    project: String,
    owner_id: String,
    owner_type: String,
    filename: String,
    content_type: String,
    max_size: i64,
    category: String,
    visibility: String,
    multipart_id: Option<String>,
    completed: bool,
    registered: bool,
    created_at: String,
}

impl Db {
    pub async fn insert_upload(&self, grant: &UploadGrant) -> Result<(), DbError> {
        let inserted = on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO uploads (key, project, owner_id, owner_type, filename, \
                 content_type, max_size, category, visibility, multipart_id, completed, \
                 registered, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
            .await
            .map(|_| ())
        });
        match inserted {
            Ok(()) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(DbError::DuplicateKey(grant.key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn find_upload(&self, key: &ObjectKey) -> Result<Option<UploadGrant>, DbError> {
        let row: Option<GrantRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT * FROM uploads WHERE key = $1")
                .bind(key.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(grant_from_row).transpose()
    }

    pub async fn mark_upload_completed(&self, key: &ObjectKey) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE uploads SET completed = TRUE WHERE key = $1")
                .bind(key.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn delete_upload(&self, key: &ObjectKey) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM uploads WHERE key = $1")
                .bind(key.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Whether the multipart upload `upload_id` may still be completed: its grant exists
    /// and its file is not registered yet.
    pub async fn multipart_open(&self, upload_id: &str) -> Result<bool, DbError> {
        let open: Option<bool> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT registered FROM uploads WHERE multipart_id = $1")
                .bind(upload_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(open == Some(false))
    }

    /// Grants issued before `cutoff` and never registered, oldest first, at most `limit`.
    pub async fn stale_uploads(
        &self,
        cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<UploadGrant>, DbError> {
        let rows: Vec<GrantRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT * FROM uploads WHERE registered = FALSE AND created_at < $1 \
                 ORDER BY created_at LIMIT $2",
            )
            .bind(format_time(cutoff))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(grant_from_row).collect()
    }
}

fn grant_from_row(row: GrantRow) -> Result<UploadGrant, DbError> {
    Ok(UploadGrant {
        key: ObjectKey::parse(&row.key)
            .map_err(|e| DbError::Corrupt(format!("uploads.key: {e}")))?,
        owner_type: parse_enum(&row.owner_type)?,
        max_size: u64::try_from(row.max_size).map_err(|e| DbError::Corrupt(e.to_string()))?,
        visibility: parse_enum(&row.visibility)?,
        created_at: parse_time(&row.created_at, "uploads.created_at")?,
        project: row.project,
        owner_id: row.owner_id,
        filename: row.filename,
        content_type: row.content_type,
        category: row.category,
        multipart_id: row.multipart_id,
        completed: row.completed,
        registered: row.registered,
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
