//! `services/proxy`: `/api/v1/namespaces/<ns>/services/[<scheme>:]<name>[:<port>]/proxy/<path>`
//! reaches an address of the Service's Endpoints over plain HTTP, as upstream's service proxy
//! does: the request is passed on (method, query, body, content headers), the answer streamed
//! back, and WebSocket upgrades passed through. Clients authenticate to the API server, so a
//! service that listens only on a node's loopback (skiff-search) is reachable, with the
//! cluster's authentication and authorization, from wherever the API server is.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::Call;
use crate::error::{ApiError, ApiResult};
use crate::objects::Objects;

/// `[scheme:]name[:port]`.
fn parse_name(raw: &str) -> ApiResult<(&str, &str, Option<&str>)> {
    let parts: Vec<&str> = raw.split(':').collect();
    Ok(match parts.as_slice() {
        [n] => ("http", *n, None),
        [n, p] => ("http", *n, Some(*p).filter(|p| !p.is_empty())),
        [s, n, p] => (*s, *n, Some(*p).filter(|p| !p.is_empty())),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid service request {raw:?}: expected [scheme:]name[:port]"
            )));
        }
    })
}

/// The address and port an Endpoints object gives for the service port named `port_name`.
fn endpoint(endpoints: &Value, port_name: &str) -> Option<(String, u16)> {
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let ip = subset["addresses"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|a| a["ip"].as_str());
        let ports = subset["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let port = ports
            .iter()
            .find(|p| p["name"].as_str().unwrap_or("") == port_name)
            .or_else(|| (ports.len() == 1).then(|| &ports[0]))
            .and_then(|p| p["port"].as_u64());
        if let (Some(ip), Some(port)) = (ip, port) {
            return Some((ip.to_owned(), port as u16));
        }
    }
    None
}

const FORWARDED: [header::HeaderName; 9] = [
    header::ACCEPT,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::ACCEPT_ENCODING,
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
];

pub(super) async fn service(call: &Call, method: &Method) -> ApiResult<Response> {
    let t = &call.target;
    let ns = t.namespace.as_deref().unwrap_or_default();
    let (scheme, name, port) = parse_name(t.name.as_deref().unwrap_or_default())?;
    if scheme != "http" {
        return Err(ApiError::unavailable(format!(
            "only http services can be proxied, not {scheme}"
        )));
    }
    let (host, port) = resolve(&call.state, ns, name, port).await?;
    let mut path = format!("/{}", t.rest.as_deref().unwrap_or(""));
    if let Some(q) = call.raw_query.as_deref().filter(|q| !q.is_empty()) {
        path.push('?');
        path.push_str(q);
    }
    let upgrade = call.upgrade.lock().expect("upgrade lock").take();
    forward(
        &host,
        port,
        method,
        &path,
        &call.headers,
        call.body.clone(),
        upgrade,
    )
    .await
}

/// The address behind a Service port (by name or number; the first port when `None`), from
/// the Service's Endpoints.
pub(crate) async fn resolve(
    state: &crate::state::AppState,
    ns: &str,
    name: &str,
    port: Option<&str>,
) -> ApiResult<(String, u16)> {
    let registry = state.registry();
    let services = registry
        .get("", "v1", "services")
        .expect("registered")
        .clone();
    let svc = Objects::new(state, &services).get(Some(ns), name).await?;
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let chosen = match port {
        None => ports.first(),
        Some(p) => ports.iter().find(|sp| {
            sp["name"].as_str() == Some(p)
                || sp["port"].as_u64().map(|n| n.to_string()).as_deref() == Some(p)
        }),
    }
    .ok_or_else(|| {
        ApiError::unavailable(format!(
            "no service port {:?} found for service \"{name}\"",
            port.unwrap_or("")
        ))
    })?;
    let port_name = chosen["name"].as_str().unwrap_or("").to_owned();
    let info = registry
        .get("", "v1", "endpoints")
        .expect("registered")
        .clone();
    let endpoints = Objects::new(state, &info)
        .get(Some(ns), name)
        .await
        .map_err(|_| {
            ApiError::unavailable(format!("no endpoints available for service \"{name}\""))
        })?;
    endpoint(&endpoints, &port_name).ok_or_else(|| {
        ApiError::unavailable(format!("no endpoints available for service \"{name}\""))
    })
}

/// Send a request to `host:port` over plain HTTP and stream the answer back; an upgrade the
/// service accepts is joined to the client's connection.
pub(crate) async fn forward(
    host: &str,
    port: u16,
    method: &Method,
    path: &str,
    headers: &axum::http::HeaderMap,
    body: bytes::Bytes,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> ApiResult<Response> {
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, format!("{host}:{port}"));
    for name in FORWARDED {
        for v in headers.get_all(&name) {
            request = request.header(&name, v);
        }
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let unreachable =
        |e: String| ApiError::unavailable(format!("error trying to reach service: {e}"));
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| unreachable(format!("dial tcp {host}:{port}: timeout")))?
    .map_err(|e| unreachable(format!("dial tcp {host}:{port}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "service proxy connection ended");
        }
    });
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut reply = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            reply = reply.header(name, value);
        }
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return Err(ApiError::bad_request(
                "the service upgraded a request that was not an upgrade",
            ));
        };
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client, upstream) {
                Ok((client, upstream)) => {
                    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                Err(e) => tracing::debug!(error = %e, "service proxy upgrade failed"),
            }
        });
        return reply
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    let body = Body::new(response.into_body().map_err(axum::Error::new));
    reply
        .body(body)
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_endpoints() {
        assert_eq!(parse_name("web").unwrap(), ("http", "web", None));
        assert_eq!(
            parse_name("web:http").unwrap(),
            ("http", "web", Some("http"))
        );
        assert_eq!(
            parse_name("https:web:443").unwrap(),
            ("https", "web", Some("443"))
        );
        assert_eq!(parse_name("web:").unwrap(), ("http", "web", None));
        assert!(parse_name("a:b:c:d").is_err());
        let eps = serde_json::json!({"subsets": [{"addresses": [{"ip": "10.0.0.5"}], "ports": [{"name": "http", "port": 9428}, {"name": "metrics", "port": 9100}]}]});
        assert_eq!(endpoint(&eps, "metrics"), Some(("10.0.0.5".into(), 9100)));
        assert_eq!(endpoint(&eps, "other"), None);
        assert_eq!(endpoint(&serde_json::json!({}), "http"), None);
    }
}
