//! The conformance suite every [`Store`] backend must pass. Each check takes a fresh, empty store.
//! Backends run it from their own tests (see `tests/conformance.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

use crate::{Error, EventKind, RangeRequest, Store, WatchResponse, WatchStream};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next(stream: &mut WatchStream) -> WatchResponse {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("watch event within 10s")
            .expect("watch stream open")
            .expect("watch ok");
        if !response.events.is_empty() {
            return response;
        }
    }
}

/// Writes get consecutive revisions; preconditions are enforced.
pub async fn check_crud(store: Arc<dyn Store>) {
    let base = store.current_revision();
    let a = store.create("/k/a", b("1")).await.unwrap();
    assert_eq!(a.mod_revision, base + 1);
    assert_eq!(a.create_revision, base + 1);
    assert_eq!(store.current_revision(), base + 1);
    assert_eq!(
        store.create("/k/a", b("x")).await.unwrap_err(),
        Error::AlreadyExists { key: "/k/a".into() }
    );
    let got = store.get("/k/a").await.unwrap().unwrap();
    assert_eq!(got, a);
    let stale = store.update("/k/a", b("2"), base).await.unwrap_err();
    assert!(
        matches!(stale, Error::Conflict { actual, .. } if actual == base + 1),
        "{stale:?}"
    );
    let a2 = store.update("/k/a", b("2"), a.mod_revision).await.unwrap();
    assert_eq!((a2.mod_revision, a2.create_revision), (base + 2, base + 1));
    assert!(matches!(
        store.update("/k/missing", b("x"), 1).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("/k/a", Some(a.mod_revision)).await,
        Err(Error::Conflict { .. })
    ));
    let deleted = store.delete("/k/a", Some(a2.mod_revision)).await.unwrap();
    assert_eq!(deleted.mod_revision, base + 3);
    assert_eq!(deleted.value, b("2"));
    assert!(store.get("/k/a").await.unwrap().is_none());
    assert!(matches!(
        store.delete("/k/a", None).await,
        Err(Error::NotFound { .. })
    ));
    // Failed writes consumed no revision.
    assert_eq!(store.current_revision(), base + 3);
    let again = store.create("/k/a", b("3")).await.unwrap();
    assert_eq!(again.create_revision, base + 4);
}

/// Prefix ranges with limit/continue, at the current and at past revisions.
pub async fn check_range(store: Arc<dyn Store>) {
    for i in 0..5 {
        store
            .create(&format!("/r/a/{i}"), b(&i.to_string()))
            .await
            .unwrap();
    }
    store.create("/r/ab", b("not under /r/a/")).await.unwrap();
    store.create("/r/b/0", b("b")).await.unwrap();
    let first = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(),
        ["/r/a/0", "/r/a/1"]
    );
    assert!(first.more);
    let rest = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            start_after: Some("/r/a/1".into()),
            revision: first.revision,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rest.kvs.len(), 3);
    assert!(!rest.more);
    assert_eq!(rest.revision, first.revision);
    // History: change and delete, then read the past.
    let at = store.current_revision();
    let k0 = store.get("/r/a/0").await.unwrap().unwrap();
    store
        .update("/r/a/0", b("changed"), k0.mod_revision)
        .await
        .unwrap();
    store.delete("/r/a/1", None).await.unwrap();
    let now = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(now.kvs.len(), 4);
    assert_eq!(now.kvs[0].value, b("changed"));
    let past = store
        .range(RangeRequest {
            prefix: "/r/a/".into(),
            revision: at,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(past.kvs.len(), 5);
    assert_eq!(past.kvs[0].value, b("0"));
    assert!(matches!(
        store
            .range(RangeRequest {
                prefix: "/r/".into(),
                revision: at + 100,
                ..Default::default()
            })
            .await,
        Err(Error::FutureRevision { .. })
    ));
}

/// A watch replays from a revision, then follows live writes, filtered by prefix.
pub async fn check_watch(store: Arc<dyn Store>) {
    let start = store.current_revision();
    let a = store.create("/w/a", b("1")).await.unwrap();
    store.create("/x/other", b("ignored")).await.unwrap();
    let mut watch = store.watch("/w/", start).await.unwrap();
    let replayed = next(&mut watch).await;
    assert_eq!(replayed.events.len(), 1);
    assert_eq!(replayed.events[0].kv, a);
    assert_eq!(replayed.events[0].kind, EventKind::Put);
    let a2 = store.update("/w/a", b("2"), a.mod_revision).await.unwrap();
    let live = next(&mut watch).await;
    assert_eq!(live.events[0].kv, a2);
    assert_eq!(live.events[0].prev.as_ref().unwrap().value, b("1"));
    store.delete("/w/a", None).await.unwrap();
    let deleted = next(&mut watch).await;
    assert_eq!(deleted.events[0].kind, EventKind::Delete);
    assert_eq!(deleted.events[0].kv.value, b("2"));
    // A watch from the current revision sees only later writes.
    let mut later = store.watch("/w/", store.current_revision()).await.unwrap();
    let c = store.create("/w/c", b("c")).await.unwrap();
    assert_eq!(next(&mut later).await.events[0].kv, c);
}

/// Many watchers all see every event, in order.
pub async fn check_watch_fanout(store: Arc<dyn Store>) {
    let start = store.current_revision();
    let mut watches = Vec::new();
    for _ in 0..20 {
        watches.push(store.watch("/f/", start).await.unwrap());
    }
    for i in 0..50 {
        store.create(&format!("/f/{i:03}"), b("v")).await.unwrap();
    }
    for w in &mut watches {
        let mut seen = Vec::new();
        while seen.len() < 50 {
            for e in next(w).await.events {
                seen.push(e.kv.key);
            }
        }
        let want: Vec<String> = (0..50).map(|i| format!("/f/{i:03}")).collect();
        assert_eq!(seen, want);
    }
}

/// Compaction forgets old revisions but keeps the state at the compaction point.
pub async fn check_compaction(store: Arc<dyn Store>) {
    let a = store.create("/c/a", b("1")).await.unwrap();
    let a2 = store.update("/c/a", b("2"), a.mod_revision).await.unwrap();
    let gone = store.create("/c/gone", b("x")).await.unwrap();
    store.delete("/c/gone", None).await.unwrap();
    let keep = store.create("/c/keep", b("k")).await.unwrap();
    let target = keep.mod_revision;
    store.update("/c/a", b("3"), a2.mod_revision).await.unwrap();
    store.compact(target).await.unwrap();
    assert_eq!(store.compacted_revision(), target);
    assert!(matches!(
        store
            .range(RangeRequest {
                prefix: "/c/".into(),
                revision: target - 1,
                ..Default::default()
            })
            .await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        store.watch("/c/", gone.mod_revision).await,
        Err(Error::Compacted { .. })
    ));
    let at = store
        .range(RangeRequest {
            prefix: "/c/".into(),
            revision: target,
            ..Default::default()
        })
        .await
        .unwrap();
    let values: Vec<(String, Bytes)> = at.kvs.into_iter().map(|k| (k.key, k.value)).collect();
    assert_eq!(
        values,
        vec![("/c/a".into(), b("2")), ("/c/keep".into(), b("k"))]
    );
    let mut w = store.watch("/c/", target).await.unwrap();
    assert_eq!(next(&mut w).await.events[0].kv.value, b("3"));
}

/// Concurrent writers get unique, gap-free revisions.
pub async fn check_concurrent_writers(store: Arc<dyn Store>) {
    let base = store.current_revision();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                revs.push(
                    store
                        .create(&format!("/p/{t}/{i}"), b("v"))
                        .await
                        .unwrap()
                        .mod_revision,
                );
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let want: Vec<i64> = (base + 1..=base + 400).collect();
    assert_eq!(all, want);
}

/// One operation of the model-based property test.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create key `k{0}`.
    Create(u8),
    /// Update key `k{0}` with the right revision, or a stale one.
    Update(u8, bool),
    /// Delete key `k{0}`.
    Delete(u8),
}

/// Random operations on a handful of keys.
pub fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        (0u8..4).prop_map(Op::Create),
        (0u8..4, any::<bool>()).prop_map(|(k, s)| Op::Update(k, s)),
        (0u8..4).prop_map(Op::Delete),
    ];
    proptest::collection::vec(op, 1..40)
}

/// Apply `ops` to the store and to an in-memory model: revisions advance by one per successful
/// write, every past revision reads back exactly the model's state then, and a watch from the
/// start yields exactly the successful writes in order.
pub async fn check_model(store: Arc<dyn Store>, ops: Vec<Op>) {
    let start = store.current_revision();
    let mut model: BTreeMap<String, (Bytes, i64)> = BTreeMap::new();
    let mut snapshots = vec![(start, model.clone())];
    let mut writes = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let before = store.current_revision();
        let value = Bytes::from(format!("v{i}"));
        let result = match op {
            Op::Create(k) => store
                .create(&format!("/m/k{k}"), value.clone())
                .await
                .map(|kv| (kv, false)),
            Op::Update(k, stale) => {
                let key = format!("/m/k{k}");
                let expected = model.get(&key).map_or(1, |(_, r)| *r) - i64::from(*stale);
                store
                    .update(&key, value.clone(), expected)
                    .await
                    .map(|kv| (kv, false))
            }
            Op::Delete(k) => store
                .delete(&format!("/m/k{k}"), None)
                .await
                .map(|kv| (kv, true)),
        };
        match result {
            Ok((kv, deleted)) => {
                assert_eq!(kv.mod_revision, before + 1, "{op:?}");
                if deleted {
                    model.remove(&kv.key);
                } else {
                    model.insert(kv.key.clone(), (value, kv.mod_revision));
                }
                writes.push((kv.key.clone(), deleted, kv.mod_revision));
                snapshots.push((kv.mod_revision, model.clone()));
            }
            Err(e) => {
                assert_eq!(
                    store.current_revision(),
                    before,
                    "failed {op:?} consumed a revision: {e}"
                );
                let expected_error = match op {
                    Op::Create(_) => matches!(e, Error::AlreadyExists { .. }),
                    Op::Update(..) => matches!(e, Error::Conflict { .. } | Error::NotFound { .. }),
                    Op::Delete(_) => matches!(e, Error::NotFound { .. }),
                };
                assert!(expected_error, "{op:?}: {e}");
            }
        }
    }
    // Revision 0 means "current" in a range request, so the empty start state is not readable.
    for (revision, state) in snapshots.iter().filter(|(r, _)| *r > 0) {
        let read = store
            .range(RangeRequest {
                prefix: "/m/".into(),
                revision: *revision,
                ..Default::default()
            })
            .await
            .unwrap();
        let got: BTreeMap<String, (Bytes, i64)> = read
            .kvs
            .into_iter()
            .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
            .collect();
        assert_eq!(&got, state, "state at revision {revision}");
    }
    if !writes.is_empty() {
        let mut watch = store.watch("/m/", start).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < writes.len() {
            for e in next(&mut watch).await.events {
                seen.push((e.kv.key, e.kind == EventKind::Delete, e.kv.mod_revision));
            }
        }
        assert_eq!(seen, writes);
    }
}
