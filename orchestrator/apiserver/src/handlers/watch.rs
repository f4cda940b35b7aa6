//! WATCH: a chunked stream of newline-delimited JSON events.
//!
//! `resourceVersion` ""/"0" sends the current state as ADDED first; "N" sends changes after N; a
//! compacted N gets an ERROR event carrying a 410 Status. Label and field selectors apply to
//! both the new and the previous state, so an object that stops matching is DELETED for this
//! watcher and one that starts matching is ADDED, as upstream's watch cache does. Under a Table
//! Accept header each event carries a one-row Table.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_api::ResourceInfo;
use skiff_api::table::{IncludeObject, build_table};
use skiff_store::{Event, EventKind, KeyValue, RangeRequest, Revision};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Call;
use super::read::list_options;
use crate::codec::{decode_stored, to_served};
use crate::error::{ApiError, ApiResult, from_store};
use crate::metrics::LongRunningLabels;
use crate::objects::ListOptions;
use crate::request::wants_table;
use crate::state::AppState;

struct Encoder {
    info: ResourceInfo,
    table: bool,
    include: IncludeObject,
    sent_header: bool,
}

impl Encoder {
    fn line(&mut self, kind: &str, object: Value) -> Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let mut t = build_table(
                &self.info.kind,
                std::slice::from_ref(&object),
                self.include,
                &rv,
                None,
            );
            if self.sent_header {
                t["columnDefinitions"] = json!([]);
            }
            self.sent_header = true;
            t
        } else {
            object
        };
        let mut bytes =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }
}

fn matches(opts: &ListOptions, kind: &str, obj: &Value) -> bool {
    opts.labels.matches_object(obj) && opts.fields.matches(kind, obj)
}

fn decode(kv: &KeyValue) -> Option<Value> {
    decode_stored(kv).ok()
}

/// The event type this watcher sees for a store event, with the object to send.
fn classify(
    opts: &ListOptions,
    info: &ResourceInfo,
    event: &Event,
) -> Option<(&'static str, Value)> {
    let kind = &info.kind;
    match event.kind {
        EventKind::Delete => {
            let obj = decode(&event.kv)?;
            matches(opts, kind, &obj).then_some(("DELETED", obj))
        }
        EventKind::Put => {
            let obj = decode(&event.kv)?;
            let now = matches(opts, kind, &obj);
            let created = event.kv.create_revision == event.kv.mod_revision;
            let before = !created
                && match &event.prev {
                    Some(prev) => decode(prev).is_some_and(|p| matches(opts, kind, &p)),
                    // History compacted: without selectors the object was visible before.
                    None => opts.labels.is_empty() && opts.fields.is_empty(),
                };
            match (before, now) {
                (true, true) => Some(("MODIFIED", obj)),
                (false, true) => Some(("ADDED", obj)),
                (true, false) => Some(("DELETED", obj)),
                (false, false) => None,
            }
        }
    }
}

pub(super) async fn watch(call: &Call) -> ApiResult<Response> {
    let t = &call.target;
    let opts = list_options(call)?;
    let info = call.state.registry().storage_info(&t.info).clone();
    let served = t.info.clone();
    let prefix = info.storage_prefix_in(t.namespace.as_deref());
    let rv = call
        .query
        .get("resourceVersion")
        .unwrap_or_default()
        .to_owned();
    let send_initial = call.query.flag("sendInitialEvents");
    let bookmarks = call.query.flag("allowWatchBookmarks");
    let timeout = match call.query.int("timeoutSeconds")? {
        Some(s) if s > 0 => Duration::from_secs(s as u64),
        _ => call.state.serving().max_watch,
    };
    let store = call.state.store().clone();
    // Initial state, when asked for.
    let mut initial = Vec::new();
    let from: Revision = if rv.is_empty() || rv == "0" || send_initial {
        let state = store
            .range(RangeRequest {
                prefix: prefix.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| from_store(e, &info, ""))?;
        for kv in &state.kvs {
            if let Some(obj) = decode(kv).filter(|o| matches(&opts, &info.kind, o)) {
                initial.push(obj);
            }
        }
        state.revision
    } else {
        rv.parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?
    };
    let mut encoder = Encoder {
        info: served.clone(),
        table: wants_table(&call.headers),
        include: IncludeObject::parse(call.query.get("includeObject")),
        sent_header: false,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let state = call.state.clone();
    let span = tracing::debug_span!("watch", resource = %served.plural, from);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let labels = LongRunningLabels {
                verb: "WATCH".into(),
                resource: served.plural.clone(),
            };
            state.metrics().longrunning.get_or_create(&labels).inc();
            let sent = stream_events(
                &state,
                &mut encoder,
                &opts,
                &info,
                &prefix,
                from,
                initial,
                send_initial,
                bookmarks,
                timeout,
                &tx,
            )
            .await;
            state
                .metrics()
                .watch_events
                .get_or_create(&labels)
                .inc_by(sent);
            state.metrics().longrunning.get_or_create(&labels).dec();
        },
        span,
    ));
    let mut response = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}

/// Feed one watch until the client leaves, the timeout passes or the server stops. Returns the
/// number of events sent.
#[allow(
    clippy::too_many_arguments,
    reason = "the watch's parameters, consumed once"
)]
async fn stream_events(
    state: &AppState,
    encoder: &mut Encoder,
    opts: &ListOptions,
    info: &ResourceInfo,
    prefix: &str,
    from: Revision,
    initial: Vec<Value>,
    send_initial: bool,
    bookmarks: bool,
    timeout: Duration,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> u64 {
    let mut sent = 0u64;
    macro_rules! send {
        ($kind:expr, $obj:expr) => {{
            if tx.send(Ok(encoder.line($kind, $obj))).await.is_err() {
                return sent;
            }
            sent += 1;
        }};
    }
    for obj in initial {
        send!("ADDED", to_served(&encoder.info, obj));
    }
    let (bookmark_kind, bookmark_api_version) =
        (encoder.info.kind.clone(), encoder.info.api_version());
    let bookmark = |rv: Revision, initial_end: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"kind": bookmark_kind, "apiVersion": bookmark_api_version, "metadata": meta})
    };
    if send_initial && bookmarks {
        let b = bookmark(from, true);
        send!("BOOKMARK", b);
    }
    let mut events = match state.store().watch(prefix, from).await {
        Ok(s) => s,
        Err(e) => {
            let status = from_store(e, info, "").status();
            send!("ERROR", status);
            return sent;
        }
    };
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut bookmark_tick = tokio::time::interval(state.serving().bookmark_interval);
    bookmark_tick.reset();
    let mut last = from;
    loop {
        tokio::select! {
            _ = &mut deadline => return sent,
            _ = state.shutdown().cancelled() => return sent,
            _ = tx.closed() => return sent,
            _ = bookmark_tick.tick(), if bookmarks => {
                let b = bookmark(last, false);
                send!("BOOKMARK", b);
            }
            next = events.next() => match next {
                None => return sent,
                Some(Err(e)) => {
                    let status = from_store(e, info, "").status();
                    send!("ERROR", status);
                    return sent;
                }
                Some(Ok(response)) => {
                    for event in &response.events {
                        if let Some((kind, obj)) = classify(opts, info, event) {
                            send!(kind, to_served(&encoder.info, obj));
                        }
                    }
                    last = response.revision;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes as B;
    use skiff_api::Registry;
    use skiff_api::selector::LabelSelector;

    fn kv(value: Value, create: i64, rev: i64) -> KeyValue {
        KeyValue {
            key: "/k".into(),
            value: B::from(serde_json::to_vec(&value).unwrap()),
            create_revision: create,
            mod_revision: rev,
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let info = Registry::builtin().get("", "v1", "pods").unwrap().clone();
        let opts = ListOptions {
            labels: LabelSelector::parse("app=web").unwrap(),
            ..Default::default()
        };
        let web = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        let api = json!({"metadata": {"name": "p", "labels": {"app": "api"}}});
        let put = |new: &Value, prev: Option<&Value>, create| Event {
            kind: EventKind::Put,
            kv: kv(new.clone(), create, 5),
            prev: prev.map(|p| kv(p.clone(), create, 4)),
        };
        assert_eq!(
            classify(&opts, &info, &put(&web, None, 5)).unwrap().0,
            "ADDED"
        );
        assert_eq!(
            classify(&opts, &info, &put(&web, Some(&web), 1)).unwrap().0,
            "MODIFIED"
        );
        assert_eq!(
            classify(&opts, &info, &put(&api, Some(&web), 1)).unwrap().0,
            "DELETED"
        );
        assert_eq!(
            classify(&opts, &info, &put(&web, Some(&api), 1)).unwrap().0,
            "ADDED"
        );
        assert!(classify(&opts, &info, &put(&api, Some(&api), 1)).is_none());
    }
}
