//! Unit tests of `store.rs`: commit outcomes, deadlines, embedded migrations.

use super::*;

#[test]
fn a_commit_that_lost_its_connection_has_an_unknown_outcome() {
    let reset = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert!(matches!(
        commit_outcome::<sqlx::Postgres>(&reset),
        StoreError::OutcomeUnknown(m) if m.starts_with("postgres: commit:")
    ));
    assert!(matches!(
        commit_outcome::<sqlx::Sqlite>(&sqlx::Error::WorkerCrashed),
        StoreError::OutcomeUnknown(_)
    ));
}

#[tokio::test]
async fn a_call_past_its_deadline_is_unavailable() {
    let budget = Duration::from_millis(50);
    let until = tokio::time::Instant::now() + budget;
    let r = within::<sqlx::Postgres, ()>(until, budget, "read task", std::future::pending()).await;
    assert!(matches!(
        r,
        Err(StoreError::Unavailable(m)) if m == "postgres: read task: no answer within 50 ms"
    ));
}

#[test]
fn every_migration_file_is_embedded() {
    let root = env!("CARGO_MANIFEST_DIR");
    assert_every_file_embedded(
        &format!("{root}/migrations/sqlite"),
        crate::sqlite::MIGRATIONS,
    );
    assert_every_file_embedded(
        &format!("{root}/migrations/postgres"),
        crate::postgres::MIGRATIONS,
    );
}

/// Checks that `migrations` lists every `*.sql` file of `dir`, named `NNNN_description.sql`,
/// in strictly increasing version order.
fn assert_every_file_embedded(dir: &str, migrations: Migrations) {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("migrations dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".sql"))
        .collect();
    files.sort();
    let embedded: Vec<String> = migrations
        .iter()
        .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
        .collect();
    assert_eq!(files, embedded, "list each {dir}/*.sql file in MIGRATIONS");
    assert!(migrations.windows(2).all(|w| w[0].0 < w[1].0));
}
