//! Live tail: Loki's `/loki/api/v1/tail` WebSocket and a server-sent-events twin at
//! `/api/v1/tail`, both taking a LogQL log query.
//!
//! A client first gets the newest `limit` lines since `start` (oldest first, as `tail -n`
//! does), then every new line that passes its query, published by the ingest path as soon as
//! the line is durable, before it is indexed: a line reaches tail clients well under a second
//! after it is acknowledged. A client too slow for the stream loses lines rather than slowing
//! ingest; the loss is counted and, on the WebSocket, reported in `dropped_entries`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::http::{Api, Params};
use crate::logql::LogExpr;
use crate::logql::eval::{self, Entry};
use crate::loki::{LokiError, parse_time, streams_json};
use crate::query::Order;

/// Most backlog lines a tail starts with.
const MAX_BACKLOG: usize = 5_000;

pub fn router() -> Router<Arc<Api>> {
    Router::new()
        .route("/loki/api/v1/tail", get(websocket))
        .route("/api/v1/tail", get(sse))
}

/// What a tail follows.
struct Request {
    expr: LogExpr,
    start: i64,
    limit: usize,
}

fn request(raw: Option<&str>) -> Result<Request, LokiError> {
    let p = Params::parse(raw);
    let text = p
        .get("query")
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| LokiError::bad("query parameter is required"))?;
    let expr = crate::logql::parse_log(text)?;
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let start = match p.get("start").filter(|s| !s.is_empty()) {
        Some(s) => parse_time(s).map_err(|e| LokiError::bad(format!("invalid start: {e}")))?,
        None => now - 3_600_000_000_000,
    };
    let limit = match p.get("limit").filter(|s| !s.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| LokiError::bad(format!("invalid limit {l:?}")))?
            .min(MAX_BACKLOG),
        None => 100,
    };
    if let Some(d) = p.get("delay_for").filter(|s| !s.is_empty()) {
        match d.parse::<u64>() {
            Ok(0..=5) => {}
            _ => return Err(LokiError::bad("delay_for can't be greater than 5")),
        }
    }
    Ok(Request { expr, start, limit })
}

/// What the follower task hands a client: lines, or how many were lost.
enum Update {
    Lines(Vec<Entry>),
    Dropped(u64),
}

/// Follow `req` until the client goes away or the service stops.
fn follow(api: Arc<Api>, req: Request) -> mpsc::Receiver<Update> {
    let (tx, rx) = mpsc::channel(16);
    let mut live = api.pipeline.subscribe();
    let span = tracing::info_span!("tail");
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            api.pipeline.metrics.tail_clients.inc();
            let _gauge = ClientGauge(api.clone());
            let mut last_seq = 0;
            if req.limit > 0 {
                let pipeline = api.pipeline.clone();
                let expr = req.expr.clone();
                let (start, limit) = (req.start, req.limit);
                let now = jiff::Timestamp::now().as_nanosecond() as i64 + 1;
                let backlog = tokio::task::spawn_blocking(move || {
                    eval::select_logs(&pipeline.store, &expr, start, now, limit, Order::Desc)
                })
                .await;
                match backlog {
                    Ok(Ok(mut lines)) => {
                        lines.reverse();
                        last_seq = lines.iter().map(|e| e.seq).max().unwrap_or(0);
                        if !lines.is_empty() && tx.send(Update::Lines(lines)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "tail backlog"),
                    Err(e) => tracing::warn!(error = %e, "tail backlog task"),
                }
            }
            loop {
                let batch = tokio::select! {
                    _ = api.shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    b = live.recv() => b,
                };
                match batch {
                    Ok(batch) => {
                        let lines: Vec<Entry> = batch
                            .iter()
                            .filter(|(seq, r)| *seq > last_seq && req.expr.selector_matches(r))
                            .filter_map(|(seq, r)| {
                                let p = req.expr.process(r)?;
                                Some(Entry {
                                    ts: r.ts,
                                    seq: *seq,
                                    labels: p.labels,
                                    line: p.line,
                                })
                            })
                            .collect();
                        if !lines.is_empty() && tx.send(Update::Lines(lines)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        api.pipeline.metrics.tail_dropped.inc_by(n);
                        if tx.send(Update::Dropped(n)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        },
        span,
    ));
    rx
}

/// Decrements the client gauge when the follower ends, however it ends.
struct ClientGauge(Arc<Api>);

impl Drop for ClientGauge {
    fn drop(&mut self) {
        self.0.pipeline.metrics.tail_clients.dec();
    }
}

async fn websocket(
    State(api): State<Arc<Api>>,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, LokiError> {
    let req = request(raw.as_deref())?;
    Ok(ws.on_upgrade(move |socket| serve_socket(api, req, socket)))
}

async fn serve_socket(api: Arc<Api>, req: Request, mut socket: WebSocket) {
    let mut updates = follow(api, req);
    let mut ping = tokio::time::interval(Duration::from_secs(30));
    ping.tick().await;
    loop {
        tokio::select! {
            update = updates.recv() => {
                let frame = match update {
                    Some(Update::Lines(lines)) => {
                        json!({"streams": streams_json(&lines), "dropped_entries": Value::Null})
                    }
                    Some(Update::Dropped(n)) => {
                        let now = jiff::Timestamp::now().as_nanosecond().to_string();
                        let dropped: Vec<Value> = (0..n.min(1000))
                            .map(|_| json!({"labels": {}, "timestamp": now}))
                            .collect();
                        json!({"streams": [], "dropped_entries": dropped})
                    }
                    None => break,
                };
                if socket.send(Message::Text(frame.to_string().into())).await.is_err() {
                    break;
                }
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

async fn sse(State(api): State<Arc<Api>>, RawQuery(raw): RawQuery) -> Result<Response, LokiError> {
    let req = request(raw.as_deref())?;
    let updates = tokio_stream::wrappers::ReceiverStream::new(follow(api, req));
    let events = updates.flat_map(|u| {
        let events: Vec<Result<Event, Infallible>> = match u {
            Update::Lines(lines) => lines
                .into_iter()
                .map(|e| {
                    Ok(Event::default().data(
                        json!({"ts": e.ts.to_string(), "seq": e.seq, "labels": e.labels, "line": e.line})
                            .to_string(),
                    ))
                })
                .collect(),
            Update::Dropped(n) => vec![Ok(Event::default()
                .event("dropped")
                .data(json!({"dropped": n}).to_string()))],
        };
        futures::stream::iter(events)
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
