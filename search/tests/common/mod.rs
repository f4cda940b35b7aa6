//! The in-process service the API tests drive: a pipeline over a temporary directory behind
//! the router, called without a socket.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_search::http::{Api, router};
use skiff_search::metrics::Metrics;
use skiff_search::pipeline::{Pipeline, PipelineConfig};
use skiff_search::store::{Store, WriterSettings};
use tower::ServiceExt;

pub struct Service {
    _dir: tempfile::TempDir,
    pub app: axum::Router,
    pub pipeline: Arc<Pipeline>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.pipeline.shutdown();
    }
}

pub fn service() -> Service {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open(
            &dir.path().join("indexes"),
            WriterSettings {
                threads: 1,
                memory_bytes: 15_000_000,
            },
        )
        .unwrap(),
    );
    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let pipeline = Pipeline::start(
        dir.path(),
        store,
        PipelineConfig {
            commit_interval: Duration::from_millis(100),
            max_line_bytes: 1024,
            max_queued_batches: 8,
        },
        metrics,
    )
    .unwrap();
    let app = router(Arc::new(Api {
        pipeline: pipeline.clone(),
        registry,
        shutdown: tokio_util::sync::CancellationToken::new(),
        auth: None,
        trust_loopback: false,
    }));
    Service {
        _dir: dir,
        app,
        pipeline,
    }
}

impl Service {
    pub async fn call(&self, method: &str, uri: &str, body: Vec<u8>) -> (u16, Value) {
        let req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::from(body))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    pub async fn ingest(&self, records: &[Value]) -> (u16, Value) {
        let body: Vec<u8> = records
            .iter()
            .flat_map(|r| {
                let mut l = serde_json::to_vec(r).unwrap();
                l.push(b'\n');
                l
            })
            .collect();
        self.call("POST", "/api/v1/ingest", body).await
    }

    pub async fn get(&self, uri: &str) -> Value {
        let (status, v) = self.call("GET", uri, Vec::new()).await;
        assert_eq!(status, 200, "{uri}: {v}");
        v
    }

    /// Wait until every accepted line is searchable.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let want = self.pipeline.metrics.lines.get();
            let have: u64 = self
                .pipeline
                .store
                .days()
                .iter()
                .map(|d| d.searcher().num_docs())
                .sum();
            if have >= want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{have} of {want} lines searchable"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub const T0: i64 = 1_795_651_200_000_000_000; // 2026-11-26T00:00:00Z
pub const SEC: i64 = 1_000_000_000;

pub fn line(ts: i64, pod: &str, message: &str) -> Value {
    json!({
        "ts": ts, "message": message, "namespace": "shop", "pod": pod, "container": "app",
        "stream": "stdout", "node": "n1", "labels": {"app": "web", "tier": "front"},
    })
}
