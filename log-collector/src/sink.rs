//! Where batches go. One record format inside (`skiff-search`'s NDJSON record); each sink
//! encodes it for its server. Retries are the caller's.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Which server speaks at the sink URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// skiff-search's `POST /api/v1/ingest`.
    Search,
}

/// How a send ended.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: the server is down, busy (429) or failing (5xx).
    #[error("{0}")]
    Retry(String),
    /// The server refused the batch itself (4xx): retrying would block the node's logs forever.
    #[error("{0}")]
    Refused(String),
}

pub struct Sink {
    kind: SinkKind,
    url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Sink {
    pub fn new(kind: SinkKind, url: &str) -> Sink {
        Sink {
            kind,
            url: url.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Send one batch of NDJSON records.
    pub async fn send(&self, body: Bytes) -> Result<(), SendError> {
        let (path, content_type) = match self.kind {
            SinkKind::Search => ("/api/v1/ingest", "application/x-ndjson"),
        };
        let req = http::Request::post(format!("{}{path}", self.url))
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .map_err(|e| SendError::Refused(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .map_err(|_| SendError::Retry("no answer within 30s".into()))?
            .map_err(|e| SendError::Retry(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let msg = format!("{status}: {}", body.trim());
        if status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::Retry(msg))
        } else {
            Err(SendError::Refused(msg))
        }
    }
}
