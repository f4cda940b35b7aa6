//! Bearer-token authentication against the cluster, for a search service listening beyond
//! loopback. A request's token is checked by asking the API server, with that token, whether
//! its holder may `get services/proxy` of `kube-system/skiff-search` (a
//! SelfSubjectAccessReview): the same permission that reaches the service through the API
//! server's proxy, so direct and proxied access follow one rule, and any token the cluster
//! accepts (static, bootstrap, service account) works without the search service holding
//! credentials of its own. Answers are cached for a minute per token.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

const CACHE_FOR: Duration = Duration::from_secs(60);

/// Per token: when it was checked and the answer.
type Cache = HashMap<String, (Instant, Result<(), Denied>)>;

pub struct Authenticator {
    /// The cluster's address and trust root, with no credentials.
    cluster: kube::Config,
    cache: Mutex<Cache>,
}

/// Why a request is refused: 401 (no or unknown token) or 403 (not allowed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub StatusCode, pub String);

impl Authenticator {
    /// The cluster of `kubeconfig`'s current context (its server and CA; its user is not used).
    pub async fn from_kubeconfig(kubeconfig: &Path) -> anyhow::Result<Authenticator> {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
        let mut cluster = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        cluster.auth_info = Default::default();
        Ok(Authenticator {
            cluster,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Check the `Authorization` header value of a request.
    pub async fn check(&self, authorization: Option<&str>) -> Result<(), Denied> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Denied(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required (Authorization: Bearer <token>)".into(),
                )
            })?;
        if let Some((at, answer)) = self.cache.lock().expect("auth cache").get(token)
            && at.elapsed() < CACHE_FOR
        {
            return answer.clone();
        }
        let answer = self.review(token).await;
        // A failure to reach the API server is not remembered: the next request asks again.
        if answer
            .as_ref()
            .err()
            .is_none_or(|d| d.0 != StatusCode::SERVICE_UNAVAILABLE)
        {
            let mut cache = self.cache.lock().expect("auth cache");
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            cache.insert(token.to_owned(), (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn review(&self, token: &str) -> Result<(), Denied> {
        let unavailable = |e: String| {
            Denied(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token with the API server: {e}"),
            )
        };
        let mut config = self.cluster.clone();
        config.auth_info.token = Some(token.to_owned().into());
        let client = kube::Client::try_from(config).map_err(|e| unavailable(e.to_string()))?;
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {
                "namespace": "kube-system",
                "verb": "get",
                "resource": "services",
                "subresource": "proxy",
                "name": "skiff-search",
            }},
        });
        let request = http::Request::post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("JSON serializes"))
            .map_err(|e| unavailable(e.to_string()))?;
        match client.request::<Value>(request).await {
            Ok(v) if v["status"]["allowed"] == Value::Bool(true) => Ok(()),
            Ok(v) => Err(Denied(
                StatusCode::FORBIDDEN,
                format!(
                    "this token may not read logs: {}",
                    v["status"]["reason"].as_str().unwrap_or("not allowed")
                ),
            )),
            Err(kube::Error::Api(s)) if s.code == 401 => Err(Denied(
                StatusCode::UNAUTHORIZED,
                "the cluster does not accept this token".into(),
            )),
            Err(kube::Error::Api(s)) if s.code == 403 => Err(Denied(
                StatusCode::FORBIDDEN,
                format!("this token may not read logs: {}", s.message),
            )),
            Err(e) => Err(unavailable(e.to_string())),
        }
    }
}
