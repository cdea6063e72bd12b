//! The shared use-once cache on PostgreSQL (`used_once`, migration 2): one-time values such as
//! DPoP proof `jti`s, accepted once cluster-wide until they expire.

use async_trait::async_trait;
use latch_core::ports::{StoreError, UseOnce};

use super::{PgStore, write_error};

impl PgStore {
    /// Records `key` as used until `expires_at_unix_secs`, for every replica: `true` the first
    /// time (or once an earlier use expired before `now_unix_secs`), `false` for a replay.
    /// One statement (`INSERT … ON CONFLICT … WHERE expired`), so two replicas racing on one
    /// key cannot both get `true`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached or does not answer
    /// within the store's deadline; callers must then
    /// refuse (never accept a value unchecked).
    pub async fn use_once(
        &self,
        key: &str,
        expires_at_unix_secs: i64,
        now_unix_secs: i64,
    ) -> Result<bool, StoreError> {
        let first = self
            .bounded("record one-time value", async {
                sqlx::query_scalar::<_, i32>(
                    "INSERT INTO used_once (key, expires_at) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at \
             WHERE used_once.expires_at < $3 RETURNING 1",
                )
                .bind(key)
                .bind(expires_at_unix_secs)
                .bind(now_unix_secs)
                .fetch_optional(&self.writer)
                .await
                .map_err(|e| write_error("record one-time value", &e))
            })
            .await?;
        Ok(first.is_some())
    }

    /// Deletes the one-time values that expired before `now_unix_secs`; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn forget_expired_once(&self, now_unix_secs: i64) -> Result<u64, StoreError> {
        self.bounded("purge one-time values", async {
            sqlx::query("DELETE FROM used_once WHERE expires_at < $1")
                .bind(now_unix_secs)
                .execute(&self.writer)
                .await
                .map(|r| r.rows_affected())
                .map_err(|e| write_error("purge one-time values", &e))
        })
        .await
    }
}

#[async_trait]
impl UseOnce for PgStore {
    async fn first_use(
        &self,
        key: &str,
        expires_at_unix_secs: i64,
        now_unix_secs: i64,
    ) -> Result<bool, StoreError> {
        self.use_once(key, expires_at_unix_secs, now_unix_secs)
            .await
    }

    async fn forget_expired(&self, now_unix_secs: i64) -> Result<u64, StoreError> {
        self.forget_expired_once(now_unix_secs).await
    }
}
