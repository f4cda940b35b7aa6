//! `pods/log` and `pods/exec`, served by the pod's node agent: the API server finds the node's
//! address and agent port, then streams the log response back, or passes the upgraded exec
//! connection through in both directions, so `kubectl logs -f` and `kubectl exec -it` work
//! unchanged.

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::Call;
use crate::error::{ApiError, ApiResult};
use crate::objects::Objects;

/// The agent address of the node a pod runs on, and the container a request is about.
async fn locate(call: &Call) -> ApiResult<(String, u16, String)> {
    let t = &call.target;
    let name = t.name.as_deref().unwrap_or_default();
    let pod = Objects::new(&call.state, &t.info)
        .get(t.namespace.as_deref(), name)
        .await?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(
            pod.pointer("/spec/initContainers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        )
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let container = match call.query.get("container").filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().any(|x| x == c) => c.to_owned(),
        Some(c) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        None => {
            let app: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match app.as_slice() {
                [only] => (*only).to_owned(),
                many => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        many.join(" ")
                    )));
                }
            }
        }
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let (address, port) = node_address(call, node_name).await?;
    Ok((address, port, container))
}

/// A node's InternalIP and agent port (`status.daemonEndpoints.kubeletEndpoint.Port`).
pub(super) async fn node_address(call: &Call, node_name: &str) -> ApiResult<(String, u16)> {
    let nodes = call
        .state
        .registry()
        .get("", "v1", "nodes")
        .expect("registered")
        .clone();
    let node = Objects::new(&call.state, &nodes)
        .get(None, node_name)
        .await?;
    let address = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .ok_or_else(|| ApiError::internal(format!("node {node_name} has no InternalIP address")))?
        .to_owned();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250) as u16;
    Ok((address, port))
}

pub(super) fn agent_error(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::NOT_FOUND => ApiError::bad_request(text),
        s if s.is_client_error() => ApiError::bad_request(text),
        _ => ApiError::internal(text),
    }
}

/// The query passed on to the agent (without `container`).
fn forwarded_query(call: &Call, names: &[&str]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for n in names {
        for v in call.query.get_all(n) {
            q.append_pair(n, &v);
        }
    }
    q.finish()
}

pub(super) async fn log(call: &Call) -> ApiResult<Response> {
    let kubelet = call
        .state
        .kubelet()
        .ok_or_else(|| ApiError::unavailable("no kubelet client configured"))?;
    let (host, port, container) = locate(call).await?;
    let t = &call.target;
    let query = forwarded_query(
        call,
        &[
            "follow",
            "tailLines",
            "sinceSeconds",
            "sinceTime",
            "timestamps",
            "previous",
            "limitBytes",
        ],
    );
    let path = format!(
        "/containerLogs/{}/{}/{container}?{query}",
        t.namespace.as_deref().unwrap_or_default(),
        t.name.as_deref().unwrap_or_default()
    );
    let mut sender = kubelet.connect(&host, port).await.map_err(|e| {
        ApiError::internal(format!(
            "connecting to the node agent at {host}:{port}: {e}"
        ))
    })?;
    let request = Request::get(&path)
        .header(header::HOST, &host)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ApiError::internal(format!("node agent: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(agent_error(status, text.trim().to_owned()));
    }
    let body = Body::new(response.into_body().map_err(axum::Error::new));
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(r)
}

pub(super) async fn exec(call: &Call) -> ApiResult<Response> {
    let kubelet = call
        .state
        .kubelet()
        .ok_or_else(|| ApiError::unavailable("no kubelet client configured"))?;
    let Some(client_upgrade) = call.upgrade.lock().expect("upgrade lock").take() else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    let (host, port, container) = locate(call).await?;
    let t = &call.target;
    let query = forwarded_query(call, &["command", "stdin", "stdout", "stderr", "tty"]);
    let path = format!(
        "/exec/{}/{}/{container}?{query}",
        t.namespace.as_deref().unwrap_or_default(),
        t.name.as_deref().unwrap_or_default()
    );
    let mut request = Request::get(&path).header(header::HOST, &host);
    for name in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        for v in call.headers.get_all(&name) {
            request = request.header(&name, v);
        }
    }
    let request = request
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut sender = kubelet.connect(&host, port).await.map_err(|e| {
        ApiError::internal(format!(
            "connecting to the node agent at {host}:{port}: {e}"
        ))
    })?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| ApiError::internal(format!("node agent: {e}")))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let text = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        return Err(agent_error(status, text.trim().to_owned()));
    }
    let agent_upgrade = hyper::upgrade::on(&mut response);
    let mut reply = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in response.headers() {
        reply = reply.header(name, value);
    }
    tokio::spawn(async move {
        match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok((client, agent)) => {
                let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
            }
            Err(e) => tracing::debug!(error = %e, "exec upgrade failed"),
        }
    });
    reply
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}
