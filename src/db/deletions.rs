//! The deletion outbox: objects (an original and its reduced copies) still to be removed
//! from storage after their file's row was deleted. `Db::delete_file` records the key in
//! the transaction that deletes the row; whoever removes the objects then forgets the
//! entry. Entries left by a node that died in between are found by `pending_deletions`
//! and finished by housekeeping, so storage never keeps an object nobody can reach, and
//! no file is ever registered without its object.

use time::OffsetDateTime;

use super::{Db, DbError, Derivatives, format_time, on_pool, stored_key};
use crate::imaging::Pyramid;
use crate::key::ObjectKey;

/// The `derivatives` value of an entry that only guards a build's copies (see
/// `Db::guard_copies`).
const BUILD_GUARD: &str = "#build";

/// One file whose objects are still to be removed.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDeletion {
    pub key: ObjectKey,
    /// The reduced copies the file had, when it had some.
    pub pyramid: Option<Pyramid>,
}

impl PendingDeletion {
    pub(super) fn from_row(
        key: &str,
        derivatives: Option<String>,
    ) -> Result<PendingDeletion, DbError> {
        let pyramid = Derivatives::from_column(derivatives.as_deref())
            .ok()
            .and_then(Derivatives::pyramid);
        Ok(PendingDeletion {
            key: stored_key(key)?,
            pyramid,
        })
    }
}

impl Db {
    /// Deletions requested before `before` that nobody finished, oldest first.
    pub async fn pending_deletions(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PendingDeletion>, DbError> {
        let rows: Vec<(String, Option<String>)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT key, derivatives FROM object_deletions WHERE requested_at < $1 \
                 ORDER BY requested_at LIMIT $2",
            )
            .bind(format_time(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(key, derivatives)| PendingDeletion::from_row(&key, derivatives))
            .collect()
    }

    /// The objects of `key` are gone: drop its outbox entry.
    pub async fn forget_deletion(&self, key: &ObjectKey) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM object_deletions WHERE key = $1")
                .bind(key.as_str())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Called by a build before it stores reduced copies of `key`. If its node dies before
    /// recording them, and the file is deleted meanwhile (possibly through another node,
    /// whose deletion ran before these copies existed), housekeeping removes them; if the
    /// file still exists, housekeeping just drops the entry. A real deletion already
    /// waiting for the key is left as it is.
    pub async fn guard_copies(&self, key: &ObjectKey) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO object_deletions (key, derivatives, requested_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key.as_str())
            .bind(BUILD_GUARD)
            .bind(format_time(super::now()))
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The build recorded its copies (or removed them): drops its guard, never a real
    /// deletion that replaced it.
    pub async fn release_copies_guard(&self, key: &ObjectKey) -> Result<(), DbError> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM object_deletions WHERE key = $1 AND derivatives = $2")
                .bind(key.as_str())
                .bind(BUILD_GUARD)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// How many deletions are waiting (for `imgedge check`).
    pub async fn deletion_backlog(&self) -> Result<u64, DbError> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM object_deletions")
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
