//! The reads every grant makes, combined across concurrent grants of one replica
//! ([`Combiner`]): the active freezes (read before deciding and again after committing) and the
//! task's counters (its history). Each caller still gets a read that started after it asked, so
//! the kill switch's and the history guard's reasoning hold as for a read of its own.

use latch_core::freeze::Freeze;
use latch_core::history::{CounterRow, CounterScope};
use latch_core::ports::StoreError;
use sqlx::postgres::PgPool;

use super::unavailable;
use crate::codec::decode_all;
use crate::combine::Combiner;
use crate::sql;

/// The combined reads of one replica.
#[derive(Default)]
pub(crate) struct Reads {
    freezes: Combiner<(), Vec<Freeze>>,
    counters: Combiner<(CounterScope, String), Vec<CounterRow>>,
}

/// The counters of several `(scope, subject)` pairs in one statement.
const COUNTERS_OF: &str = "SELECT c.scope, c.subject, c.name, c.window_start, c.count \
    FROM counters c JOIN unnest($1::text[], $2::text[]) AS k (scope, subject) \
    ON c.scope = k.scope AND c.subject = k.subject ORDER BY c.name";

impl Reads {
    /// The active freezes, oldest first.
    pub(super) async fn active_freezes(&self, pool: &PgPool) -> Result<Vec<Freeze>, StoreError> {
        self.freezes
            .get((), |keys| async move {
                let bodies = sqlx::query_scalar::<_, String>(sql::ACTIVE_FREEZES)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| unavailable("list active freezes", &e))?;
                let freezes: Vec<Freeze> = decode_all("freeze", bodies)?;
                Ok(keys.iter().map(|()| freezes.clone()).collect())
            })
            .await
    }

    /// The counters of `scope` and `subject`, by name.
    pub(super) async fn counters(
        &self,
        pool: &PgPool,
        scope: CounterScope,
        subject: &str,
    ) -> Result<Vec<CounterRow>, StoreError> {
        self.counters
            .get((scope, subject.to_owned()), |keys| async move {
                let scopes: Vec<&str> = keys.iter().map(|(s, _)| s.as_str()).collect();
                let subjects: Vec<&str> = keys.iter().map(|(_, s)| s.as_str()).collect();
                let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(COUNTERS_OF)
                    .bind(&scopes)
                    .bind(&subjects)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| unavailable("read counters", &e))?;
                Ok(keys
                    .iter()
                    .map(|(scope, subject)| {
                        rows.iter()
                            .filter(|r| r.0 == scope.as_str() && &r.1 == subject)
                            .map(|r| CounterRow {
                                name: r.2.clone(),
                                window_start: r.3,
                                count: r.4,
                            })
                            .collect()
                    })
                    .collect())
            })
            .await
    }
}
