//! `nodes/{name}/proxy/{path}`: requests passed to the node's agent as upstream passes them to
//! the kubelet, so `kubectl get --raw /api/v1/nodes/<node>/proxy/metrics/cadvisor` and
//! Prometheus jobs that scrape kubelets through the API server work. `{name}` may carry a port
//! (`node-1:10250`), which replaces the agent port the node reports.

use axum::body::Body;
use axum::http::{Method, Request, header};
use axum::response::Response;
use http_body_util::{BodyExt, Full};

use super::Call;
use super::proxy::node_address;
use crate::error::{ApiError, ApiResult};

/// Headers passed through in both directions besides the body's own.
const FORWARDED: [header::HeaderName; 2] = [header::ACCEPT, header::CONTENT_TYPE];

pub(super) async fn node(call: &Call, method: &Method) -> ApiResult<Response> {
    let kubelet = call
        .state
        .kubelet()
        .ok_or_else(|| ApiError::unavailable("no kubelet client configured"))?;
    let raw = call.target.name.as_deref().unwrap_or_default();
    let (name, port) = match raw.rsplit_once(':') {
        Some((n, p)) => (
            n,
            Some(p.parse::<u16>().map_err(|_| {
                ApiError::bad_request(format!("invalid port in node name {raw:?}"))
            })?),
        ),
        None => (raw, None),
    };
    let (host, reported_port) = node_address(call, name).await?;
    let port = port.unwrap_or(reported_port);
    let mut path = format!("/{}", call.target.rest.as_deref().unwrap_or(""));
    if let Some(q) = call.raw_query.as_deref().filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    let mut request = Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(header::HOST, format!("{host}:{port}"));
    for name in FORWARDED {
        for v in call.headers.get_all(&name) {
            request = request.header(&name, v);
        }
    }
    let request = request
        .body(Full::new(call.body.clone()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let unreachable = |e: String| {
        ApiError::unavailable(format!(
            "error trying to reach node {name} at {host}:{port}: {e}"
        ))
    };
    let mut sender = kubelet
        .connect(&host, port)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut reply = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            reply = reply.header(name, value);
        }
    }
    reply
        .body(Body::new(response.into_body().map_err(axum::Error::new)))
        .map_err(|e| ApiError::internal(e.to_string()))
}
