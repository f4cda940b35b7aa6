//! The Loki-compatible HTTP API, so Grafana's built-in Loki data source and logcli work against
//! skiff-search: `/loki/api/v1/query`, `/query_range`, `/labels`, `/label/{name}/values`,
//! `/series`, `/index/stats`, `/index/volume(_range)`, `/status/buildinfo` (and `/push` and
//! `/tail` in their own modules). Shapes follow Loki's HTTP API reference: timestamps are
//! Unix ns as integers, seconds as floats, or RFC 3339; `start` is inclusive and `end`
//! exclusive; sample values are strings; empty answers are `[]`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::http::{Api, Params};
use crate::logql::eval::{self, Entry, Series, Steps};
use crate::logql::lines::{Labels, STREAM_LABELS};
use crate::logql::{self, Expr};
use crate::query::{self, Order, QueryError};
use crate::schema::LABEL_FIELDS;

/// The Loki version reported to clients that pick features by it (Grafana does).
pub const LOKI_VERSION: &str = "3.0.0";

/// Most lines one log query may return.
pub const MAX_LIMIT: usize = 10_000;

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/loki/api/v1/query", get(instant).post(instant))
        .route("/loki/api/v1/query_range", get(range).post(range))
        .route("/loki/api/v1/labels", get(labels).post(labels))
        .route("/loki/api/v1/label/{name}/values", get(label_values))
        .route("/loki/api/v1/series", get(series).post(series))
        .route("/loki/api/v1/index/stats", get(index_stats))
        .route("/loki/api/v1/index/volume", get(volume))
        .route("/loki/api/v1/index/volume_range", get(volume_range))
        .route("/loki/api/v1/status/buildinfo", get(buildinfo))
}

/// A Loki error answer: the status and `{"status":"error","message":…}`, which Grafana shows.
pub struct LokiError(StatusCode, String);

impl LokiError {
    pub fn bad(msg: impl Into<String>) -> LokiError {
        LokiError(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (
            self.0,
            axum::Json(json!({"status": "error", "errorType": "bad_data", "message": self.1})),
        )
            .into_response()
    }
}

impl From<QueryError> for LokiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => LokiError::bad(m),
            QueryError::Index(e) => LokiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<logql::ParseError> for LokiError {
    fn from(e: logql::ParseError) -> Self {
        LokiError::bad(e.to_string())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LokiError> + Send + 'static,
) -> Result<T, LokiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LokiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query parameters from the URL and, for POST, a form body.
fn params(raw: Option<String>, body: Option<&[u8]>) -> Params {
    let mut all = raw.unwrap_or_default();
    if let Some(b) = body.filter(|b| !b.is_empty()) {
        if !all.is_empty() {
            all.push('&');
        }
        all.push_str(&String::from_utf8_lossy(b));
    }
    Params::parse(Some(&all))
}

/// The parameters of a Loki request: the URL's, and for POST also the form body's.
pub struct Form(Params);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Form {
    type Rejection = LokiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Form, LokiError> {
        let raw = req.uri().query().map(str::to_owned);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| LokiError::bad(e.to_string()))?;
        Ok(Form(params(raw, Some(&body))))
    }
}

/// A Loki timestamp: integer Unix ns, float Unix seconds, or RFC 3339.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    if let Ok(f) = s.parse::<f64>() {
        return Ok((f * 1e9) as i64);
    }
    crate::record::parse_timestamp(s)
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

fn time_param(p: &Params, key: &str) -> Result<Option<i64>, LokiError> {
    p.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| parse_time(v).map_err(|e| LokiError::bad(format!("invalid {key} parameter: {e}"))))
        .transpose()
}

/// A duration parameter: `15s`, `1m30s`, or float seconds.
fn duration_param(p: &Params, key: &str) -> Result<Option<i64>, LokiError> {
    let Some(v) = p.get(key).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(secs) = v.parse::<f64>() {
        return Ok(Some((secs * 1e9) as i64));
    }
    logql::lexer::parse_duration(v).map(Some).ok_or_else(|| {
        LokiError::bad(format!(
            "invalid {key} parameter {v:?}: a duration like 15s or 1m, or seconds"
        ))
    })
}

/// `[start, end)` from `start`/`end`/`since`, with `since` defaulting to `default_since_ns`.
fn time_range(p: &Params, default_since_ns: i64) -> Result<(i64, i64), LokiError> {
    let end = time_param(p, "end")?.unwrap_or_else(now_ns);
    let start = match time_param(p, "start")? {
        Some(s) => s,
        None => end - duration_param(p, "since")?.unwrap_or(default_since_ns),
    };
    if end < start {
        return Err(LokiError::bad(
            "the end timestamp must not be before the start time",
        ));
    }
    Ok((start, end))
}

const HOUR: i64 = 3_600_000_000_000;

fn direction(p: &Params) -> Result<Order, LokiError> {
    match p.get("direction").map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("backward") => Ok(Order::Desc),
        Some("forward") => Ok(Order::Asc),
        Some(d) => Err(LokiError::bad(format!(
            "invalid direction {d:?}: forward or backward"
        ))),
    }
}

fn limit(p: &Params) -> Result<usize, LokiError> {
    let n = match p.get("limit").filter(|v| !v.is_empty()) {
        None => 100,
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| LokiError::bad(format!("invalid limit {v:?}")))?,
    };
    if n > MAX_LIMIT {
        return Err(LokiError::bad(format!(
            "max entries limit per query exceeded, limit > max_entries_limit ({n} > {MAX_LIMIT})"
        )));
    }
    Ok(n)
}

fn query_text(p: &Params) -> Result<&str, LokiError> {
    p.get("query")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| LokiError::bad("query parameter is required"))
}

/// Unix seconds as Loki prints them: an integer when whole.
pub fn seconds(ns: i64) -> Value {
    if ns % 1_000_000_000 == 0 {
        json!(ns / 1_000_000_000)
    } else {
        json!(ns as f64 / 1e9)
    }
}

/// A sample value as Prometheus formats it.
pub fn sample(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn stats(elapsed: f64, lines: usize) -> Value {
    json!({"summary": {"execTime": elapsed, "totalEntriesReturned": lines}})
}

/// Entries grouped into streams, first-seen order, each stream's entries in query order.
pub fn streams_json(entries: &[Entry]) -> Value {
    let mut order: Vec<&Labels> = Vec::new();
    let mut by: BTreeMap<&Labels, Vec<Value>> = BTreeMap::new();
    for e in entries {
        let slot = by.entry(&e.labels).or_insert_with(|| {
            order.push(&e.labels);
            Vec::new()
        });
        slot.push(json!([e.ts.to_string(), e.line]));
    }
    Value::Array(
        order
            .into_iter()
            .map(|l| json!({"stream": l, "values": by.remove(l).unwrap_or_default()}))
            .collect(),
    )
}

fn matrix_json(steps: &Steps, series: &[Series]) -> Value {
    Value::Array(
        series
            .iter()
            .map(|s| {
                let values: Vec<Value> = s
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| Some(json!([seconds(steps.at(i)), sample((*v)?)])))
                    .collect();
                json!({"metric": s.labels, "values": values})
            })
            .collect(),
    )
}

async fn instant(State(api): State<Arc<Api>>, Form(p): Form) -> Result<Response, LokiError> {
    let text = query_text(&p)?.to_owned();
    let at = time_param(&p, "time")?.unwrap_or_else(now_ns);
    let Expr::Metric(expr) = logql::parse(&text)? else {
        return Err(LokiError::bad(
            "log queries are not supported as an instant query type, please change your query to a range query type",
        ));
    };
    let started = Instant::now();
    let pipeline = api.pipeline.clone();
    let steps = Steps::instant(at);
    let value = blocking(move || Ok(eval::eval(&pipeline.store, &expr, &steps)?)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    api.pipeline.metrics.query("loki_query", elapsed);
    let (kind, result) = match value {
        eval::Value::Scalar(v) => ("scalar", json!([seconds(at), sample(v)])),
        eval::Value::Vector(series) => (
            "vector",
            Value::Array(
                series
                    .iter()
                    .filter_map(|s| {
                        let v = s.values[0]?;
                        Some(json!({"metric": s.labels, "value": [seconds(at), sample(v)]}))
                    })
                    .collect(),
            ),
        ),
    };
    Ok(success(
        json!({"resultType": kind, "result": result, "stats": stats(elapsed, 0)}),
    ))
}

async fn range(State(api): State<Arc<Api>>, Form(p): Form) -> Result<Response, LokiError> {
    let text = query_text(&p)?.to_owned();
    let (start, end) = time_range(&p, HOUR)?;
    let expr = logql::parse(&text)?;
    let started = Instant::now();
    let pipeline = api.pipeline.clone();
    let data = match expr {
        Expr::Log(log) => {
            let order = direction(&p)?;
            let limit = limit(&p)?;
            let entries = blocking(move || {
                Ok(eval::select_logs(
                    &pipeline.store,
                    &log,
                    start,
                    end,
                    limit,
                    order,
                )?)
            })
            .await?;
            let elapsed = started.elapsed().as_secs_f64();
            api.pipeline.metrics.query("loki_query_range", elapsed);
            json!({
                "resultType": "streams",
                "result": streams_json(&entries),
                "stats": stats(elapsed, entries.len()),
            })
        }
        Expr::Metric(m) => {
            // Loki's default: about 250 points over the range, at least a second apart.
            let default_step = ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000;
            let step = duration_param(&p, "step")?.unwrap_or(default_step);
            let steps = Steps::range(start, end, step)?;
            let value = blocking(move || Ok(eval::eval(&pipeline.store, &m, &steps)?)).await?;
            let elapsed = started.elapsed().as_secs_f64();
            api.pipeline.metrics.query("loki_query_range", elapsed);
            let series = match value {
                eval::Value::Vector(v) => v,
                eval::Value::Scalar(v) => vec![Series {
                    labels: Labels::new(),
                    values: vec![Some(v); steps.n],
                }],
            };
            json!({
                "resultType": "matrix",
                "result": matrix_json(&steps, &series),
                "stats": stats(elapsed, 0),
            })
        }
    };
    Ok(success(data))
}

/// The index filters of an optional `query=` selector over `[start, end)`.
fn selector_filters(
    p: &Params,
    key: &str,
    start: i64,
    end: i64,
) -> Result<Vec<query::Filters>, LokiError> {
    let mut out = Vec::new();
    for text in p.all(key).filter(|t| !t.trim().is_empty()) {
        let log = logql::parse_log(text)?;
        out.push(eval::plan(&log, start, end).0);
    }
    Ok(out)
}

fn all_lines(start: i64, end: i64) -> query::Filters {
    query::Filters {
        start,
        end,
        ..query::Filters::default()
    }
}

async fn labels(State(api): State<Arc<Api>>, Form(p): Form) -> Result<Response, LokiError> {
    let (start, end) = time_range(&p, 6 * HOUR)?;
    let filters = selector_filters(&p, "query", start, end)?
        .pop()
        .unwrap_or_else(|| all_lines(start, end));
    let pipeline = api.pipeline.clone();
    let started = Instant::now();
    let names = blocking(move || {
        let sets = query::distinct(&pipeline.store, &filters, STREAM_LABELS)?;
        Ok(STREAM_LABELS
            .iter()
            .zip(sets)
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, _)| *n)
            .collect::<Vec<_>>())
    })
    .await?;
    api.pipeline
        .metrics
        .query("loki_labels", started.elapsed().as_secs_f64());
    let mut names = names;
    names.sort_unstable();
    Ok(success(json!(names)))
}

async fn label_values(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, LokiError> {
    let p = params(raw, None);
    let (start, end) = time_range(&p, 6 * HOUR)?;
    let filters = selector_filters(&p, "query", start, end)?
        .pop()
        .unwrap_or_else(|| all_lines(start, end));
    let column = if LABEL_FIELDS.contains(&name.as_str()) {
        name.clone()
    } else {
        format!("labels.{name}")
    };
    let pipeline = api.pipeline.clone();
    let started = Instant::now();
    let values = blocking(move || {
        Ok(
            query::distinct(&pipeline.store, &filters, &[column.as_str()])?
                .pop()
                .unwrap_or_default(),
        )
    })
    .await?;
    api.pipeline
        .metrics
        .query("loki_label_values", started.elapsed().as_secs_f64());
    Ok(success(json!(values)))
}

/// The distinct stream label sets among lines matching `filters`, with line and byte counts.
fn streams_of(
    store: &crate::store::Store,
    filters: &query::Filters,
) -> Result<BTreeMap<Labels, (f64, f64)>, QueryError> {
    let names: Vec<String> = STREAM_LABELS.iter().map(|s| (*s).to_owned()).collect();
    let span = (filters.end - filters.start).max(1);
    let lines = query::counts(store, filters, filters.start, span, &names, false)?;
    let bytes = query::counts(store, filters, filters.start, span, &names, true)?;
    let mut out = BTreeMap::new();
    for (key, v) in lines {
        let b = bytes.get(&key).map(|b| b.iter().sum()).unwrap_or(0.0);
        let labels: Labels = names
            .iter()
            .zip(key)
            .filter_map(|(n, v)| Some((n.clone(), v?)))
            .collect();
        out.insert(labels, (v.iter().sum(), b));
    }
    Ok(out)
}

async fn series(State(api): State<Arc<Api>>, Form(p): Form) -> Result<Response, LokiError> {
    let (start, end) = time_range(&p, 6 * HOUR)?;
    let mut selectors = selector_filters(&p, "match[]", start, end)?;
    selectors.extend(selector_filters(&p, "match", start, end)?);
    if selectors.is_empty() {
        return Err(LokiError::bad(
            "at least one match[] (or match) selector is required",
        ));
    }
    let pipeline = api.pipeline.clone();
    let started = Instant::now();
    let sets = blocking(move || {
        let mut all = std::collections::BTreeSet::new();
        for f in &selectors {
            all.extend(streams_of(&pipeline.store, f)?.into_keys());
        }
        Ok(all)
    })
    .await?;
    api.pipeline
        .metrics
        .query("loki_series", started.elapsed().as_secs_f64());
    Ok(success(json!(sets.into_iter().collect::<Vec<_>>())))
}

async fn index_stats(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, LokiError> {
    let p = params(raw, None);
    let (start, end) = time_range(&p, HOUR)?;
    let filters = selector_filters(&p, "query", start, end)?
        .pop()
        .ok_or_else(|| LokiError::bad("query parameter is required"))?;
    let pipeline = api.pipeline.clone();
    let (streams, chunks) = blocking(move || {
        let chunks: usize = pipeline
            .store
            .days_between(filters.start, filters.end)
            .iter()
            .map(|d| d.searcher().segment_readers().len())
            .sum();
        Ok((streams_of(&pipeline.store, &filters)?, chunks))
    })
    .await?;
    let entries: f64 = streams.values().map(|v| v.0).sum();
    let bytes: f64 = streams.values().map(|v| v.1).sum();
    Ok(axum::Json(json!({
        "streams": streams.len(),
        "chunks": chunks,
        "entries": entries as u64,
        "bytes": bytes as u64,
    }))
    .into_response())
}

/// Bytes per group of labels: `targetLabels`, else the labels the selector names.
async fn volume_common(api: Arc<Api>, p: Params, ranged: bool) -> Result<Response, LokiError> {
    let (start, end) = time_range(&p, HOUR)?;
    let text = query_text(&p)?;
    let log = logql::parse_log(text)?;
    let filters = eval::plan(&log, start, end).0;
    let limit = p
        .get("limit")
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<usize>())
        .transpose()
        .map_err(|_| LokiError::bad("invalid limit"))?
        .unwrap_or(100);
    let mut group: Vec<String> = match p.get("targetLabels").filter(|t| !t.is_empty()) {
        Some(t) => t.split(',').map(|s| s.trim().to_owned()).collect(),
        None => log.matchers.iter().map(|m| m.name.clone()).collect(),
    };
    group.retain(|g| LABEL_FIELDS.contains(&g.as_str()));
    group.dedup();
    let step = if ranged {
        let default_step = ((end - start) / 250 / 1_000_000_000).max(1) * 1_000_000_000;
        duration_param(&p, "step")?.unwrap_or(default_step)
    } else {
        (end - start).max(1)
    };
    let pipeline = api.pipeline.clone();
    let g = group.clone();
    let groups = blocking(move || {
        Ok(query::counts(
            &pipeline.store,
            &filters,
            filters.start,
            step,
            &g,
            true,
        )?)
    })
    .await?;
    let mut rows: Vec<(Labels, Vec<f64>)> = groups
        .into_iter()
        .map(|(key, v)| {
            let labels = group
                .iter()
                .zip(key)
                .filter_map(|(n, v)| Some((n.clone(), v?)))
                .collect();
            (labels, v)
        })
        .collect();
    rows.sort_by(|a, b| {
        let (x, y): (f64, f64) = (a.1.iter().sum(), b.1.iter().sum());
        y.total_cmp(&x)
    });
    rows.truncate(limit);
    let result: Vec<Value> = if ranged {
        rows.iter()
            .map(|(labels, v)| {
                let values: Vec<Value> = v
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| **x > 0.0)
                    .map(|(i, x)| json!([seconds(start + i as i64 * step), sample(*x)]))
                    .collect();
                json!({"metric": labels, "values": values})
            })
            .collect()
    } else {
        rows.iter()
            .map(|(labels, v)| {
                json!({"metric": labels, "value": [seconds(end), sample(v.iter().sum())]})
            })
            .collect()
    };
    Ok(success(json!({
        "resultType": if ranged { "matrix" } else { "vector" },
        "result": result,
    })))
}

async fn volume(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, LokiError> {
    volume_common(api, params(raw, None), false).await
}

async fn volume_range(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, LokiError> {
    volume_common(api, params(raw, None), true).await
}

async fn buildinfo() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({
            "version": LOKI_VERSION,
            "revision": concat!("skiff-search ", env!("CARGO_PKG_VERSION")),
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
        })),
    )
        .into_response()
}
