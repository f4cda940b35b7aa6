//! The native HTTP API:
//!
//! - `POST /api/v1/ingest` — NDJSON, one record per line; 200 with counts once durable, 400
//!   naming the bad line (nothing of the batch is stored), 413 over the size limit, 429 when the
//!   indexer is behind (retry after a second).
//! - `GET /api/v1/search` — lines matching query text and filters, newest (or oldest) first,
//!   with a cursor for the next page and optional highlighting.
//! - `GET /api/v1/histogram` — line counts per interval, optionally split by a label.
//! - `GET /api/v1/labels`, `GET /api/v1/labels/{name}/values` — label names and values (with
//!   counts, most frequent first: the "top values" of a field).
//! - `GET /api/v1/context` — lines around one line of the same container.
//! - `/metrics`, `/ready`, `/healthz`.
//!
//! Query work runs on the blocking pool, never on the async threads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::pipeline::{IngestError, Pipeline};
use crate::query::{self, Filters, Matcher, Order, QueryError, SearchRequest};
use crate::record::{LogRecord, parse_timestamp};
use crate::schema::LABEL_FIELDS;

/// Largest ingest body.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

pub struct Api {
    pub pipeline: Arc<Pipeline>,
    pub registry: prometheus_client::registry::Registry,
    /// Ends live tails when the service stops.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Bearer tokens checked against the cluster (when listening beyond loopback).
    pub auth: Option<Arc<crate::auth::Authenticator>>,
    /// Callers on loopback need no token.
    pub trust_loopback: bool,
}

pub fn router(api: Arc<Api>) -> Router {
    let protected = Router::new()
        .route("/api/v1/ingest", post(ingest))
        .route("/api/v1/search", get(search))
        .route("/api/v1/histogram", get(histogram))
        .route("/api/v1/labels", get(labels))
        .route("/api/v1/labels/{name}/values", get(label_values))
        .route("/api/v1/context", get(context))
        .route("/metrics", get(metrics))
        .merge(crate::loki::router())
        .merge(crate::tail::router())
        .merge(crate::push::router())
        .merge(crate::otlp::router())
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            require_token,
        ));
    protected
        .route("/ready", get(|| async { "ready" }))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(api)
}

/// A server span per request (ingest batches, queries, tails), continuing the caller's trace:
/// a collector's batch and the search service's handling of it are one trace.
async fn trace_request(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned(),
        );
    let span = skiff_telemetry::trace::server_span(
        request.method(),
        &route,
        request.uri().path(),
        request.headers(),
    );
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    skiff_telemetry::trace::record_status(&span, response.status());
    response
}

/// With authentication on, every route but the health checks needs a token the cluster
/// accepts; with `trust_loopback`, callers on loopback are let in as they are when the service
/// listens on loopback only (Prometheus and Grafana beside it, the API server's service proxy,
/// which has authorized its caller already).
async fn require_token(
    State(api): State<Arc<Api>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let from_loopback = api.trust_loopback
        && request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_some_and(|peer| peer.0.ip().is_loopback());
    if let Some(auth) = api.auth.as_ref().filter(|_| !from_loopback) {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(crate::auth::Denied(status, message)) = auth.check(header).await {
            api.pipeline.metrics.reject("unauthorized");
            let mut r = ApiError(status, message).into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return r;
        }
    }
    next.run(request).await
}

/// An error answer: `{"error": message}` with a status.
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            QueryError::Index(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        let status = match &e {
            IngestError::Invalid { .. } => StatusCode::BAD_REQUEST,
            IngestError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::Io(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// Run blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

/// Parse an NDJSON body into records, naming the first bad line.
pub fn parse_ndjson(body: &[u8]) -> Result<Vec<LogRecord>, ApiError> {
    let mut records = Vec::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let record: LogRecord = serde_json::from_slice(line)
            .map_err(|e| ApiError::bad_request(format!("line {}: {e}", i + 1)))?;
        records.push(record);
    }
    Ok(records)
}

async fn ingest(State(api): State<Arc<Api>>, body: Bytes) -> Result<Response, ApiError> {
    let records = parse_ndjson(&body).inspect_err(|_| api.pipeline.metrics.reject("invalid"))?;
    Ok(axum::Json(store(&api, records).await?).into_response())
}

/// Store decoded records (every ingest format ends here), off the async threads.
pub async fn store(
    api: &Api,
    records: Vec<LogRecord>,
) -> Result<crate::pipeline::Ingested, ApiError> {
    let pipeline = api.pipeline.clone();
    blocking(move || pipeline.ingest(records).map_err(ApiError::from)).await
}

/// Query parameters, repeated keys kept.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn usize(&self, key: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map(|n| n.min(max))
                .map_err(|_| ApiError::bad_request(format!("{key}={v:?} is not a number"))),
        }
    }
}

/// A duration such as `15m`, `1h`, `90s`, or plain seconds.
pub fn parse_duration_ns(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>() {
        return Ok((secs * 1e9) as i64);
    }
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 15m or 1h: {e}"))?;
    i64::try_from(d.as_nanos()).map_err(|_| format!("{text:?} is too long"))
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// `start`/`end`/`since` into `[start, end)`: `end` defaults to now, `start` to `end - since`
/// (`since` defaults to `default_since`).
pub fn time_range(p: &Params, default_since: &str) -> Result<(i64, i64), ApiError> {
    let at = |key: &str| -> Result<Option<i64>, ApiError> {
        p.get(key)
            .filter(|v| !v.is_empty())
            .map(|v| parse_timestamp(v).map_err(|e| ApiError::bad_request(format!("{key}: {e}"))))
            .transpose()
    };
    let end = at("end")?.unwrap_or_else(|| now_ns().saturating_add(1));
    let start = match at("start")? {
        Some(s) => s,
        None => {
            let since = p.get("since").unwrap_or(default_since);
            end - parse_duration_ns(since)
                .map_err(|e| ApiError::bad_request(format!("since: {e}")))?
        }
    };
    if start >= end {
        return Err(ApiError::bad_request("start must be before end"));
    }
    Ok((start, end))
}

/// The filters every query endpoint takes: `query`, one parameter per built-in label
/// (`namespace=…`), `label=key=value` (repeatable) for pod labels, and the time range.
fn filters(p: &Params) -> Result<Filters, ApiError> {
    let (start, end) = time_range(p, "1h")?;
    let mut labels = Vec::new();
    for name in LABEL_FIELDS {
        for v in p.all(name) {
            labels.push((name.to_owned(), Matcher::Eq(v.to_owned())));
        }
    }
    for l in p.all("label") {
        let (k, m) = if let Some((k, v)) = l.split_once("!=") {
            (k, Matcher::Ne(v.to_owned()))
        } else if let Some((k, v)) = l.split_once('=') {
            (k, Matcher::Eq(v.to_owned()))
        } else {
            return Err(ApiError::bad_request(format!(
                "label={l:?}: expected key=value or key!=value"
            )));
        };
        let name = if LABEL_FIELDS.contains(&k) {
            k.to_owned()
        } else {
            format!("labels.{k}")
        };
        labels.push((name, m));
    }
    Ok(Filters {
        text: p.get("query").map(str::to_owned),
        labels,
        start,
        end,
        words: Vec::new(),
    })
}

fn encode_cursor(pos: (i64, u64)) -> String {
    format!("{}-{}", pos.0, pos.1)
}

fn decode_cursor(s: &str) -> Result<(i64, u64), ApiError> {
    let bad = || ApiError::bad_request(format!("cursor {s:?} is not one this server returned"));
    let (ts, seq) = s.rsplit_once('-').ok_or_else(bad)?;
    Ok((
        ts.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}

fn rfc3339(ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ns))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn hit_json(h: &query::Hit) -> Value {
    let mut v = serde_json::to_value(&h.record).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("time".into(), Value::String(rfc3339(h.ts)));
        obj.insert("seq".into(), json!(h.seq));
        if let Some(hl) = &h.highlight {
            obj.insert("highlight".into(), Value::String(hl.clone()));
        }
    }
    v
}

async fn search(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref());
    let order = match p.get("order").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("desc") | Some("newest") => Order::Desc,
        Some("asc") | Some("oldest") => Order::Asc,
        Some(o) => {
            return Err(ApiError::bad_request(format!(
                "order={o:?}: use desc or asc"
            )));
        }
    };
    let req = SearchRequest {
        filters: filters(&p)?,
        order,
        limit: p.usize("limit", 100, 10_000)?,
        after: p
            .get("cursor")
            .filter(|c| !c.is_empty())
            .map(decode_cursor)
            .transpose()?,
        highlight: matches!(p.get("highlight"), Some("true" | "1" | "")),
        count: true,
    };
    let started = Instant::now();
    let pipeline = api.pipeline.clone();
    let result = blocking(move || Ok(query::search(&pipeline.store, &req)?)).await?;
    api.pipeline
        .metrics
        .query("search", started.elapsed().as_secs_f64());
    Ok(axum::Json(json!({
        "hits": result.hits.iter().map(hit_json).collect::<Vec<_>>(),
        "total": result.total,
        // Elasticsearch's words: "eq" when exact, "gte" when counting stopped at 10 000.
        "total_relation": if result.total_exact { "eq" } else { "gte" },
        "cursor": result.next.map(encode_cursor),
    }))
    .into_response())
}

/// The histogram's interval when none is asked for: the shortest round one (1 s … 1 d, as
/// Kibana picks) that draws at most 100 bars over `span`. Whole minutes also let the
/// counts come from the segments' rollups.
fn auto_interval(span: i64) -> i64 {
    const SEC: i64 = 1_000_000_000;
    const ROUND: [i64; 13] = [
        1,
        5,
        10,
        30,
        60,
        300,
        600,
        1800,
        3600,
        3 * 3600,
        6 * 3600,
        12 * 3600,
        86_400,
    ];
    (ROUND.iter())
        .map(|s| s * SEC)
        .find(|step| span / step <= 100)
        .unwrap_or_else(|| (span / 100 / (86_400 * SEC) + 1) * 86_400 * SEC)
}

async fn histogram(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref());
    let filters = filters(&p)?;
    let span = filters.end - filters.start;
    let step = match p.get("interval").filter(|v| !v.is_empty()) {
        Some(v) => {
            parse_duration_ns(v).map_err(|e| ApiError::bad_request(format!("interval: {e}")))?
        }
        None => auto_interval(span),
    };
    let split: Vec<String> = p
        .get("split")
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default();
    let started = Instant::now();
    let pipeline = api.pipeline.clone();
    let f = filters.clone();
    let split2 = split.clone();
    // Buckets on multiples of the interval (whole minutes, hours …), as Kibana draws them;
    // the first and last may be partly outside the range.
    let origin = filters.start - filters.start.rem_euclid(step);
    let groups = blocking(move || {
        Ok(query::counts(
            &pipeline.store,
            &f,
            origin,
            step,
            &split2,
            false,
        )?)
    })
    .await?;
    api.pipeline
        .metrics
        .query("histogram", started.elapsed().as_secs_f64());
    let buckets = groups
        .values()
        .next()
        .map(Vec::len)
        .unwrap_or_else(|| ((filters.end - origin).saturating_add(step - 1) / step) as usize);
    let mut out = Vec::with_capacity(buckets);
    for i in 0..buckets {
        let ts = origin + i as i64 * step;
        let mut by = BTreeMap::new();
        let mut total = 0.0;
        for (k, v) in &groups {
            total += v[i];
            if !split.is_empty() && v[i] > 0.0 {
                let name = k[0].clone().unwrap_or_default();
                *by.entry(name).or_insert(0.0) += v[i];
            }
        }
        let mut b = json!({"time": rfc3339(ts), "ts": ts, "count": total as u64});
        if !split.is_empty() {
            b["by"] = json!(
                by.into_iter()
                    .map(|(k, v)| (k, v as u64))
                    .collect::<BTreeMap<_, _>>()
            );
        }
        out.push(b);
    }
    Ok(axum::Json(json!({"interval_ns": step, "buckets": out})).into_response())
}

async fn labels(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref());
    let filters = filters(&p)?;
    let pipeline = api.pipeline.clone();
    let names = blocking(move || {
        let mut names = Vec::new();
        for name in LABEL_FIELDS {
            if !query::values(&pipeline.store, &filters, name)?.is_empty() {
                names.push(name);
            }
        }
        Ok(names)
    })
    .await?;
    Ok(axum::Json(json!({ "labels": names })).into_response())
}

async fn label_values(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref());
    let filters = filters(&p)?;
    let limit = p.usize("limit", 1000, 100_000)?;
    let started = Instant::now();
    let pipeline = api.pipeline.clone();
    let mut values = blocking(move || Ok(query::values(&pipeline.store, &filters, &name)?)).await?;
    api.pipeline
        .metrics
        .query("label_values", started.elapsed().as_secs_f64());
    values.truncate(limit);
    let values: Vec<Value> = values
        .into_iter()
        .map(|(value, count)| json!({"value": value, "count": count}))
        .collect();
    Ok(axum::Json(json!({ "values": values })).into_response())
}

async fn context(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = Params::parse(raw.as_deref());
    let seq = p
        .get("seq")
        .ok_or_else(|| ApiError::bad_request("seq is required (a hit's seq)"))?
        .parse::<u64>()
        .map_err(|_| ApiError::bad_request("seq is not a number"))?;
    let before = p.usize("before", 10, 1000)?;
    let after = p.usize("after", 10, 1000)?;
    let pipeline = api.pipeline.clone();
    let lines = blocking(move || Ok(query::context(&pipeline.store, seq, before, after)?)).await?;
    match lines {
        Some(lines) => Ok(axum::Json(json!({
            "lines": lines.iter().map(hit_json).collect::<Vec<_>>()
        }))
        .into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no line with seq {seq}"),
        )),
    }
}

async fn metrics(State(api): State<Arc<Api>>, headers: axum::http::HeaderMap) -> Response {
    let store = api.pipeline.store.clone();
    let m = api.pipeline.metrics.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for d in store.days() {
            let labels = crate::metrics::IndexLabels {
                index: d.name.clone(),
            };
            m.index_bytes.get_or_create(&labels).set(d.size() as i64);
            m.index_docs
                .get_or_create(&labels)
                .set(d.searcher().num_docs() as i64);
        }
    })
    .await;
    skiff_telemetry::metrics_response(&api.registry, &headers)
}

#[cfg(test)]
mod tests {
    use super::auto_interval;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn default_intervals_are_round_and_draw_at_most_100_bars() {
        assert_eq!(auto_interval(3600 * SEC), 60 * SEC);
        assert_eq!(auto_interval(600 * SEC), 10 * SEC);
        assert_eq!(auto_interval(86_400 * SEC - 5 * SEC), 1800 * SEC);
        assert_eq!(auto_interval(20 * SEC), SEC);
        assert_eq!(auto_interval(365 * 86_400 * SEC), 4 * 86_400 * SEC);
    }
}
