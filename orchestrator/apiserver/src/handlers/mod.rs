//! Resource requests: one entry point resolves the path against the registry, picks the verb and
//! counts the request; the verb handlers live in the sibling modules.

mod node_proxy;
mod patch;
mod proxy;
mod read;
mod reviews;
pub(crate) mod service_proxy;
mod subresources;
mod watch;
mod write;

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::metrics::{DurationLabels, RequestLabels};
use crate::request::{Query, Target, parse_target};
use crate::state::AppState;

/// Everything a verb handler needs about the request.
pub(crate) struct Call {
    pub(crate) identity: Option<Identity>,
    /// The client connection's upgrade, for exec.
    pub(crate) upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
    pub(crate) state: AppState,
    pub(crate) target: Target,
    pub(crate) query: Query,
    /// The query string as sent (proxies pass it on unchanged).
    pub(crate) raw_query: Option<String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// `/api/v1/{*rest}`.
pub(crate) async fn core(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    identity: Option<Extension<Identity>>,
    request: Request,
) -> Response {
    let identity = identity.map(|Extension(i)| i);
    dispatch(state, identity, ("", "v1", &rest), request).await
}

/// `/apis/{group}/{version}/{*rest}`.
pub(crate) async fn grouped(
    State(state): State<AppState>,
    Path((group, version, rest)): Path<(String, String, String)>,
    identity: Option<Extension<Identity>>,
    request: Request,
) -> Response {
    let identity = identity.map(|Extension(i)| i);
    if state
        .registry()
        .in_group_version(&group, &version)
        .next()
        .is_none()
        && let Some(backend) = crate::aggregator::backend(&state, &group, &version).await
    {
        return aggregated(&state, &backend, request).await;
    }
    dispatch(state, identity, (&group, &version, &rest), request).await
}

/// Pass a request for an aggregated group/version to the Service an APIService names.
pub(crate) async fn aggregated(
    state: &AppState,
    backend: &crate::aggregator::Backend,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.serving().max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request(format!("reading the request body: {e}")).into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    crate::aggregator::proxy(state, backend, &parts.method, &path, &parts.headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn dispatch(
    state: AppState,
    identity: Option<Identity>,
    (group, version, rest): (&str, &str, &str),
    mut request: Request,
) -> Response {
    let upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    let started = Instant::now();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let target = match parse_target(state.registry(), group, version, &segments) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let query = Query::parse(uri.query());
    let verb = verb_of(&method, &target, &query, &headers);
    if let Err(e) =
        crate::authz::authorize(identity.as_ref(), crate::authz::verb_name(&verb), &target)
    {
        return finish(&state, &target, &verb, &query, started, e.into_response());
    }
    let body = match read_body(body, state.serving().max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return finish(&state, &target, &verb, &query, started, e.into_response()),
    };
    state.metrics().inflight.inc();
    let call = Call {
        identity,
        upgrade: std::sync::Mutex::new(upgrade),
        state: state.clone(),
        target,
        query,
        raw_query: uri.query().map(str::to_owned),
        headers,
        body,
    };
    let response = route(&call, &method, &verb)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    state.metrics().inflight.dec();
    finish(&state, &call.target, &verb, &call.query, started, response)
}

async fn route(call: &Call, method: &Method, verb: &str) -> ApiResult<Response> {
    let t = &call.target;
    let sub = t.subresource.as_deref();
    match (method.as_str(), t.is_collection(), sub) {
        ("POST", true, _) if t.info.is_review() => {
            reviews::review(call, call.identity.as_ref()).await
        }
        (_, _, _) if t.info.is_review() => Err(ApiError::method_not_allowed(verb, &t.info)),
        ("GET", true, _) if call.query.flag("watch") => watch::watch(call).await,
        ("GET", true, _) => read::list(call).await,
        ("POST", true, _) => write::create(call).await,
        ("DELETE", true, _) => write::delete_collection(call).await,
        ("GET", false, None | Some("status" | "approval")) => read::get(call).await,
        ("PUT", false, None | Some("status" | "approval")) => write::update(call).await,
        ("PATCH", false, None | Some("status" | "approval")) => patch::patch(call).await,
        ("DELETE", false, None) => write::delete(call).await,
        (_, false, Some("scale")) => subresources::scale(call, method).await,
        ("POST", false, Some("eviction")) => subresources::eviction(call).await,
        ("POST", false, Some("binding")) => subresources::binding(call).await,
        ("PUT", false, Some("finalize")) => subresources::finalize(call).await,
        ("GET", false, Some("log")) => proxy::log(call).await,
        ("GET" | "POST", false, Some("exec")) => proxy::exec(call).await,
        (_, false, Some("proxy")) if t.info.plural == "services" => {
            service_proxy::service(call, method).await
        }
        (_, false, Some("proxy")) if t.info.plural == "nodes" => {
            node_proxy::node(call, method).await
        }
        (_, false, Some("proxy" | "attach" | "portforward")) => {
            Err(ApiError::unavailable(format!(
                "{} is not served yet for {}/{}",
                sub.unwrap_or_default(),
                t.info.plural,
                t.name.as_deref().unwrap_or_default()
            )))
        }
        _ => Err(ApiError::method_not_allowed(verb, &t.info)),
    }
}

/// Upstream's verb label: LIST and WATCH for collections, APPLY for server-side apply.
fn verb_of(method: &Method, target: &Target, query: &Query, headers: &HeaderMap) -> String {
    match method.as_str() {
        "GET" if target.is_collection() && query.flag("watch") => "WATCH".into(),
        "GET" if target.is_collection() => "LIST".into(),
        "GET"
            if matches!(
                target.subresource.as_deref(),
                Some("exec" | "attach" | "portforward" | "proxy")
            ) =>
        {
            "CONNECT".into()
        }
        "PATCH" if crate::request::content_type(headers) == "application/apply-patch+yaml" => {
            "APPLY".into()
        }
        "DELETE" if target.is_collection() => "DELETECOLLECTION".into(),
        other => other.to_owned(),
    }
}

/// How much of an oversized body is read and dropped before answering 413, so the client has
/// sent it all and reads the answer (closing on unread data resets the connection, and the
/// client would see a broken pipe instead of the Status).
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn read_body(body: Body, limit: usize) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(ApiError::bad_request("reading the request body failed"));
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > limit + DRAIN_LIMIT {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf.freeze())
}

fn finish(
    state: &AppState,
    target: &Target,
    verb: &str,
    query: &Query,
    started: Instant,
    response: Response,
) -> Response {
    let info = &target.info;
    let scope = if target.name.is_some() {
        "resource"
    } else if target.namespace.is_some() {
        "namespace"
    } else {
        "cluster"
    };
    let subresource = target.subresource.clone().unwrap_or_default();
    state
        .metrics()
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.to_owned(),
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.plural.clone(),
            subresource: subresource.clone(),
            scope: scope.into(),
            component: "apiserver".into(),
            code: response.status().as_u16().to_string(),
            dry_run: if query.get("dryRun") == Some("All") {
                "All".into()
            } else {
                String::new()
            },
        })
        .inc();
    if verb != "WATCH" && verb != "CONNECT" {
        state
            .metrics()
            .durations
            .get_or_create(&DurationLabels {
                verb: verb.to_owned(),
                group: info.group.clone(),
                version: info.version.clone(),
                resource: info.plural.clone(),
                subresource,
                scope: scope.into(),
                component: "apiserver".into(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
    tracing::debug!(verb, resource = %info.plural, status = response.status().as_u16(), "request");
    response
}

/// A JSON response with warnings in `Warning` headers, as upstream sends them.
pub(crate) fn json_response(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, v);
        }
    }
    response
}
