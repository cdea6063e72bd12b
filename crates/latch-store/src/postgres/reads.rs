//! The reads every grant makes, combined across concurrent grants of one replica
//! ([`Combiner`]): the active freezes (when no group commit's read below answers) and the
//! task's counters (its history). Each caller still gets a read that started after it asked, so
//! the kill switch's and the history guard's reasoning hold as for a read of its own.
//!
//! The freezes are also read inside every group commit (`group.rs`), under the lock on the
//! audit chain head, and kept here as the replica's [`FreezeSnapshot`]. A grant's check after
//! its commit is answered from it without a transaction of its own when the snapshot comes from
//! that grant's group or a later one, which is as good as a fresh read for the kill switch:
//! an engagement appends its audit event under the same lock, so it either committed before
//! the snapshot's read (and is in it) or waited for that group's commit (and its sweep of live
//! leases, which starts after its own commit, sees the grant's lease). The check before
//! deciding takes a snapshot at most [`RECENT`] old: on the replica that engaged a freeze the
//! snapshot holds it from the engagement's own commit on (a group that read freezes but kept
//! none, past [`SNAPSHOT_FREEZES`](super::group::SNAPSHOT_FREEZES), drops the kept one);
//! elsewhere a grant may decide on an older one and is then refused (and its lease revoked) by
//! the check after its commit.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use latch_core::freeze::Freeze;
use latch_core::history::{CounterRow, CounterScope};
use latch_core::ports::StoreError;
use sqlx::postgres::PgPool;
use tokio::time::Instant;

use super::unavailable;
use crate::codec::decode_all;
use crate::combine::Combiner;
use crate::sql;

/// How old a [`FreezeSnapshot`] may be for a grant's check before deciding.
pub(crate) const RECENT: Duration = Duration::from_millis(250);

/// The combined reads of one replica.
#[derive(Default)]
pub(crate) struct Reads {
    freezes: Combiner<(), Vec<Freeze>>,
    counters: Combiner<(CounterScope, String), Vec<CounterRow>>,
    /// The freezes as the latest committed group of this replica read them.
    snapshot: Mutex<Option<FreezeSnapshot>>,
}

/// The active freezes as one group commit read them, under the chain head's lock.
#[derive(Debug, Clone)]
pub(crate) struct FreezeSnapshot {
    /// The last audit seq that group appended.
    pub(crate) seq: i64,
    /// When the read was made.
    pub(crate) at: Instant,
    /// The active freezes, oldest first.
    pub(crate) freezes: Vec<Freeze>,
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

    /// Keeps `snap` if it comes from a later group than the one kept. Called after the
    /// group committed and before any of its callers is answered.
    pub(super) fn publish(&self, snap: FreezeSnapshot) {
        let mut kept = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.as_ref().is_none_or(|k| k.seq < snap.seq) {
            *kept = Some(snap);
        }
    }

    /// Drops the kept snapshot: a later group read the freezes and kept none.
    pub(super) fn forget(&self) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The kept freezes if they were read in the group that appended `seq` or a later one.
    pub(super) fn freezes_after(&self, seq: i64) -> Option<Vec<Freeze>> {
        let kept = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref()
            .filter(|k| k.seq >= seq)
            .map(|k| k.freezes.clone())
    }

    /// The kept freezes if they were read at most [`RECENT`] ago.
    pub(super) fn recent_freezes(&self) -> Option<Vec<Freeze>> {
        let kept = self.snapshot.lock().unwrap_or_else(PoisonError::into_inner);
        kept.as_ref()
            .filter(|k| k.at.elapsed() <= RECENT)
            .map(|k| k.freezes.clone())
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

#[cfg(test)]
#[path = "reads_tests.rs"]
mod tests;
