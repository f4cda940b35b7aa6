//! Content negotiation between OpenMetrics 1.0 and the Prometheus text format 0.0.4.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::Registry;

/// Content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const TEXT_0_0_4: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Whether the `Accept` header ranks OpenMetrics above the plain text format (as Prometheus
/// does: `application/openmetrics-text;version=1.0.0,…,text/plain;version=0.0.4;q=0.5`).
pub fn wants_openmetrics(headers: &HeaderMap) -> bool {
    let mut best_om = 0.0f32;
    let mut best_text = 0.0f32;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for part in value.split(',') {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default().to_ascii_lowercase();
            let q = params
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => best_om = best_om.max(q),
                "text/plain" | "*/*" => best_text = best_text.max(q),
                _ => {}
            }
        }
    }
    best_om > 0.0 && best_om >= best_text
}

/// `registry` rendered in the format the request prefers.
pub fn metrics_response(registry: &Registry, headers: &HeaderMap) -> Response {
    let mut text = String::new();
    let (result, content_type) = if wants_openmetrics(headers) {
        (
            prometheus_client::encoding::text::encode(&mut text, registry),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut text, registry),
            TEXT_0_0_4,
        )
    };
    match result {
        Ok(()) => {
            let mut r = (StatusCode::OK, text).into_response();
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn prometheus_gets_openmetrics_and_curl_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(&accept(prometheus)));
        assert!(!wants_openmetrics(&accept("*/*")));
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!wants_openmetrics(&accept(
            "text/plain;version=0.0.4,application/openmetrics-text;q=0.3"
        )));
    }

    #[test]
    fn both_formats_render() {
        let mut registry = Registry::default();
        let c = prometheus_client::metrics::counter::Counter::<u64>::default();
        c.inc();
        registry.register("demo_requests", "Requests", c);
        let om = metrics_response(&registry, &accept("application/openmetrics-text"));
        assert_eq!(om.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let text = metrics_response(&registry, &HeaderMap::new());
        assert_eq!(text.headers()[header::CONTENT_TYPE], TEXT_0_0_4);
    }
}
