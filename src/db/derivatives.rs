//! The derivatives column: which files still need their reduced copies, claims so that
//! several nodes never build the same file at once, and what the edge reads per key.
//!
//! States (`Derivatives`; stored as in `migrations/*/…derivatives.sql`): NULL = to build;
//! `#<time>` = claimed at `<time>` (fixed-width, so a claim older than a cutoff is simply
//! `< '#<cutoff>'`); `none`; or a `Pyramid` in text form.

use std::sync::Arc;

use time::OffsetDateTime;

use super::{Announce, Db, DbError, Visibility, format_time, on_pool, parse_enum};
use crate::imaging::Pyramid;
use crate::key::ObjectKey;

/// The column's value of a file that gets no derivatives.
const NO_DERIVATIVES: &str = "none";

/// A file's reduced copies, as its `derivatives` column records them (the column's text
/// encoding is this module's business; everyone else sees this type).
#[derive(Debug, Clone, PartialEq)]
pub enum Derivatives {
    /// Still to be built (NULL).
    Pending,
    /// Being built (`#<time>`: a builder's claim), or guarded by one (`#build`).
    Claimed,
    /// None will be built (`none`): not an image, undecodable, animated, over the budget.
    Never,
    /// Built: these levels are stored beside the original.
    Built(Pyramid),
}

impl Derivatives {
    /// Reads a column value; a value that is none of the above is an error saying why.
    pub fn from_column(value: Option<&str>) -> Result<Derivatives, String> {
        match value {
            None => Ok(Derivatives::Pending),
            Some(v) if v.starts_with('#') => Ok(Derivatives::Claimed),
            Some(NO_DERIVATIVES) => Ok(Derivatives::Never),
            Some(v) => v.parse().map(Derivatives::Built),
        }
    }

    /// The recorded levels, when built.
    pub fn pyramid(self) -> Option<Pyramid> {
        match self {
            Derivatives::Built(p) => Some(p),
            _ => None,
        }
    }

    /// The column's text for an outcome a builder records (`Never` or `Built`).
    fn outcome(&self) -> Option<String> {
        match self {
            Derivatives::Never => Some(NO_DERIVATIVES.to_owned()),
            Derivatives::Built(p) => Some(p.to_string()),
            Derivatives::Pending | Derivatives::Claimed => None,
        }
    }
}

/// What the edge needs to know about a file, cached per key.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeFacts {
    pub visibility: Visibility,
    /// The file's reduced copies, once built.
    pub pyramid: Option<Arc<Pyramid>>,
    /// The original's size in bytes as registered (what a render reserves memory for
    /// before reading it).
    pub size: u64,
    /// When the record last changed (registration, replacement, edit): tells one version of
    /// the file's content from the next under the same key.
    pub updated_at: String,
}

/// A claim on one file's derivatives, held while building them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: ObjectKey,
    token: String,
}

fn claim_token(at: OffsetDateTime) -> String {
    format!("#{}", format_time(at))
}

impl Db {
    /// Visibility and pyramid of the file stored under `key`; `None` when there is no such
    /// file. A derivatives value that does not parse is logged and ignored (the original is
    /// always a correct source).
    pub async fn edge_facts(&self, key: &ObjectKey) -> Result<Option<EdgeFacts>, DbError> {
        let row: Option<(String, Option<String>, i64, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT visibility, derivatives, size, updated_at FROM files WHERE s3_key = $1",
            )
                .bind(key.as_str())
                .fetch_optional(pool)
                .await?
        });
        let Some((visibility, derivatives, size, updated_at)) = row else {
            return Ok(None);
        };
        let pyramid = match Derivatives::from_column(derivatives.as_deref()) {
            Ok(d) => d.pyramid().map(Arc::new),
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "ignoring a bad derivatives value");
                None
            }
        };
        Ok(Some(EdgeFacts {
            visibility: parse_enum(&visibility)?,
            pyramid,
            size: u64::try_from(size).unwrap_or(0),
            updated_at,
        }))
    }

    /// Claims up to `limit` files whose derivatives are still to be built (or whose claim
    /// is older than `stale_before`: its builder died), oldest first. Files that are not
    /// images are marked `none` on the way.
    pub async fn claim_pending_derivatives(
        &self,
        now: OffsetDateTime,
        stale_before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Claim>, DbError> {
        let stale = claim_token(stale_before);
        let token = claim_token(now);
        let keys: Vec<String> = on_pool!(self, pool => {
            sqlx::query(
                "UPDATE files SET derivatives = $1 \
                 WHERE derivatives IS NULL AND mime_type NOT LIKE 'image/%'",
            )
            .bind(NO_DERIVATIVES)
            .execute(pool)
            .await?;
            sqlx::query_scalar(
                "SELECT s3_key FROM files WHERE (derivatives IS NULL OR derivatives < $1) \
                 ORDER BY created_at LIMIT $2",
            )
            .bind(&stale)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        let mut claims = Vec::with_capacity(keys.len());
        for key in keys {
            // Another node may have claimed it in between: only rows still pending count.
            let won = on_pool!(self, pool => {
                sqlx::query(
                    "UPDATE files SET derivatives = $1 WHERE s3_key = $2 \
                     AND (derivatives IS NULL OR derivatives < $3)",
                )
                .bind(&token)
                .bind(&key)
                .bind(&stale)
                .execute(pool)
                .await?
                .rows_affected()
            });
            if won == 1 {
                let key = ObjectKey::parse(&key)
                    .map_err(|e| DbError::Corrupt(format!("stored key: {e}")))?;
                claims.push(Claim {
                    key,
                    token: token.clone(),
                });
            }
        }
        Ok(claims)
    }

    /// Records the outcome of a claim (`Built` or `Never`) and announces the change.
    /// `false`: the claim was lost (the file was replaced or deleted meanwhile), nothing
    /// was written.
    pub async fn finish_derivatives(
        &self,
        claim: &Claim,
        outcome: &Derivatives,
    ) -> Result<bool, DbError> {
        let Some(value) = outcome.outcome() else {
            return Err(DbError::Corrupt(format!(
                "{outcome:?} is not an outcome a build records"
            )));
        };
        let done = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE files SET derivatives = $1 WHERE s3_key = $2 AND derivatives = $3")
                .bind(value)
                .bind(claim.key.as_str())
                .bind(&claim.token)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 1 {
                tx.announce(&claim.key).await?;
            }
            tx.commit().await?;
            done
        });
        Ok(done == 1)
    }

    /// Gives back claims left by a builder that died. Only with SQLite, which serves one
    /// node: when that node starts no builder of its own runs yet, so every claim is a
    /// leftover of a crash, retried at once instead of after the claim's TTL. With
    /// PostgreSQL other nodes' builders may be running; their claims expire by age.
    pub async fn release_orphaned_claims(&self) -> Result<u64, DbError> {
        let Db::Sqlite(pool) = self else { return Ok(0) };
        let done = sqlx::query("UPDATE files SET derivatives = NULL WHERE derivatives LIKE '#%'")
            .execute(pool)
            .await?
            .rows_affected();
        Ok(done)
    }

    /// Sends a file whose recorded reduced copies turned out to be missing back to the
    /// builder, if its record is still `value`. `true` for the one caller (of every node)
    /// that did it; the change is announced so every edge stops looking for the copies.
    pub async fn rebuild_derivatives(&self, key: &ObjectKey, value: &str) -> Result<bool, DbError> {
        let done = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE files SET derivatives = NULL WHERE s3_key = $1 AND derivatives = $2")
                .bind(key.as_str())
                .bind(value)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 1 {
                tx.announce(key).await?;
            }
            tx.commit().await?;
            done
        });
        Ok(done == 1)
    }

    /// Gives a claim back after a transient failure, so a later round retries the file.
    pub async fn release_derivatives(&self, claim: &Claim) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE files SET derivatives = NULL WHERE s3_key = $1 AND derivatives = $2")
                .bind(claim.key.as_str())
                .bind(&claim.token)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Files whose derivatives are not built yet (claimed ones included).
    pub async fn derivative_backlog(&self) -> Result<u64, DbError> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM files WHERE derivatives IS NULL OR derivatives < '$'",
            )
            .fetch_one(pool)
            .await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{NewFile, OwnerType};
    use time::Duration;

    async fn db_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        for (key, mime) in files {
            db.insert_file(NewFile {
                project: "p".into(),
                key: ObjectKey::parse(key).unwrap(),
                original_name: (*key).into(),
                mime_type: (*mime).into(),
                size: 1,
                width: None,
                height: None,
                visibility: Visibility::Public,
                owner_id: "u".into(),
                owner_type: OwnerType::User,
            })
            .await
            .unwrap();
        }
        (dir, db)
    }

    #[tokio::test]
    async fn files_are_claimed_once_finished_and_read_by_the_edge() {
        let (_dir, db) = db_with(&[("a.jpg", "image/jpeg"), ("doc.pdf", "application/pdf")]).await;
        let t0 = OffsetDateTime::now_utc();
        let stale = t0 - Duration::minutes(10);
        assert_eq!(db.derivative_backlog().await.unwrap(), 2);
        let claims = db.claim_pending_derivatives(t0, stale, 10).await.unwrap();
        assert_eq!(claims.len(), 1, "only the image: the PDF is marked none");
        assert_eq!(
            db.derivative_backlog().await.unwrap(),
            1,
            "claimed is still backlog"
        );
        // A second builder finds nothing to do while the claim is fresh.
        assert!(
            db.claim_pending_derivatives(t0, stale, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let key = ObjectKey::parse("a.jpg").unwrap();
        let facts = db.edge_facts(&key).await.unwrap().unwrap();
        assert_eq!(facts.pyramid, None, "a claim is not a pyramid");
        let value = "jpeg 3000x2000 640x427";
        let built = Derivatives::Built(value.parse().unwrap());
        assert!(db.finish_derivatives(&claims[0], &built).await.unwrap());
        let facts = db.edge_facts(&key).await.unwrap().unwrap();
        assert_eq!(facts.visibility, Visibility::Public);
        assert_eq!(facts.pyramid.unwrap().to_string(), value);
        assert_eq!(db.derivative_backlog().await.unwrap(), 0);
        assert!(
            !db.finish_derivatives(&claims[0], &Derivatives::Never)
                .await
                .unwrap(),
            "used up"
        );
    }

    #[tokio::test]
    async fn stale_claims_are_taken_over_and_released_claims_retried() {
        let (_dir, db) = db_with(&[("a.jpg", "image/jpeg")]).await;
        let t0 = OffsetDateTime::now_utc() - Duration::hours(1);
        let first = db
            .claim_pending_derivatives(t0, t0 - Duration::minutes(10), 10)
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        // An hour later the claim is stale: another builder takes over.
        let now = OffsetDateTime::now_utc();
        let second = db
            .claim_pending_derivatives(now, now - Duration::minutes(10), 10)
            .await
            .unwrap();
        assert_eq!(second.len(), 1);
        assert!(
            !db.finish_derivatives(&first[0], &Derivatives::Never)
                .await
                .unwrap()
        );
        db.release_derivatives(&second[0]).await.unwrap();
        let third = db
            .claim_pending_derivatives(now, now - Duration::minutes(10), 10)
            .await
            .unwrap();
        assert_eq!(third.len(), 1);
    }

    #[tokio::test]
    async fn replacing_a_file_asks_for_new_derivatives() {
        let (_dir, db) = db_with(&[("a.jpg", "image/jpeg")]).await;
        let now = OffsetDateTime::now_utc();
        let claims = db
            .claim_pending_derivatives(now, now - Duration::minutes(10), 10)
            .await
            .unwrap();
        db.finish_derivatives(
            &claims[0],
            &Derivatives::Built("jpeg 3000x2000 640x427".parse().unwrap()),
        )
        .await
        .unwrap();
        let key = ObjectKey::parse("a.jpg").unwrap();
        let rec = db.find_by_key(&key).await.unwrap().unwrap();
        db.refresh_file(&NewFile {
            project: rec.project,
            key: key.clone(),
            original_name: rec.original_name,
            mime_type: rec.mime_type,
            size: 2,
            width: None,
            height: None,
            visibility: rec.visibility,
            owner_id: rec.owner_id,
            owner_type: rec.owner_type,
        })
        .await
        .unwrap();
        assert_eq!(db.edge_facts(&key).await.unwrap().unwrap().pyramid, None);
        assert_eq!(db.derivative_backlog().await.unwrap(), 1);
    }
}
