//! The store conformance suite against `SqliteStore`, plus SQLite-specific durability checks.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use skiff_store::testsuite::{self, ops};
use skiff_store::{RangeRequest, SqliteStore, SqliteStoreConfig, Store, StoreMetrics};

fn open(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    SqliteStore::open(
        SqliteStoreConfig::new(dir.path().join("state.db")),
        StoreMetrics::default(),
    )
    .unwrap()
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let dir = tempfile::tempdir().unwrap();
            testsuite::$name(open(&dir)).await;
        }
    )*};
}

conformance!(
    check_crud,
    check_range,
    check_watch,
    check_watch_fanout,
    check_compaction,
    check_concurrent_writers
);

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn revisions_reads_and_watches_follow_the_model(ops in ops()) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            testsuite::check_model(open(&dir), ops).await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_revision_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    for i in 0..10 {
        store
            .create(&format!("/d/{i}"), Bytes::from("v"))
            .await
            .unwrap();
    }
    store.delete("/d/9", None).await.unwrap();
    store.compact(5).await.unwrap();
    let revision = store.current_revision();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.current_revision(), revision);
    assert_eq!(store.compacted_revision(), 5);
    let all = store
        .range(RangeRequest {
            prefix: "/d/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), 9);
    let next = store.create("/d/new", Bytes::from("v")).await.unwrap();
    assert_eq!(next.mod_revision, revision + 1);
}

/// Constant churn on a fixed set of keys must not grow the database (file plus WAL) without bound
/// once compaction and background checkpoints run: it stays near its size after the first round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_compaction_keeps_the_file_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteStoreConfig::new(dir.path().join("state.db"));
    config.maintenance_interval = Duration::from_millis(50);
    config.retention_window = Duration::from_millis(0);
    config.min_retained_revisions = 100;
    config.checkpoint_interval = Duration::from_millis(20);
    let store = SqliteStore::open(config, StoreMetrics::default()).unwrap();
    let value = Bytes::from(vec![b'x'; 2048]);
    let mut revs = std::collections::HashMap::new();
    let mut sizes = Vec::new();
    for round in 0..6 {
        for k in 0..200 {
            let key = format!("/churn/{k}");
            let kv = match revs.get(&key) {
                None => store.create(&key, value.clone()).await.unwrap(),
                Some(rev) => store.update(&key, value.clone(), *rev).await.unwrap(),
            };
            revs.insert(key, kv.mod_revision);
        }
        store.compact(store.current_revision() - 100).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The database file proper: compaction frees pages and later writes reuse them. (The
        // WAL beside it is reused rather than shrunk, so a checkpoint that a loaded machine
        // delays leaves a higher water mark there; `journal_size_limit` bounds that.)
        let size = std::fs::metadata(dir.path().join("state.db"))
            .unwrap()
            .len();
        sizes.push(size);
        if round >= 2 {
            assert!(size <= sizes[1] * 2, "database grew under churn: {sizes:?}");
        }
        let wal = std::fs::metadata(dir.path().join("state.db-wal")).map_or(0, |m| m.len());
        assert!(
            wal <= 64 * 1024 * 1024,
            "WAL beyond journal_size_limit: {wal}"
        );
    }
}
