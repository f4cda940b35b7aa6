//! Talking to the API server: raw requests through the kube client, errors printed the way
//! kubectl prints them, and discovery (which resource a name like `deploy` means).

use std::fmt;

use anyhow::{Result, anyhow};
use futures::{AsyncBufReadExt, Stream, TryStreamExt};
use http::{Method, Request, header};
use serde_json::Value;

/// An API error carrying the server's Status.
#[derive(Debug)]
pub(crate) struct ServerError {
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) code: u16,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error from server ({}): {}", self.reason, self.message)
    }
}

impl std::error::Error for ServerError {}

/// A proxied service's error answer, as it sent it.
#[derive(Debug)]
pub(crate) struct ProxiedError {
    pub(crate) status: u16,
    pub(crate) body: String,
}

impl fmt::Display for ProxiedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A Status from the API server, or the service's own {"message"} / {"error"}.
        let v: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        match v["message"].as_str().or(v["error"].as_str()) {
            Some(m) => write!(f, "{m}"),
            None => write!(f, "HTTP {}: {}", self.status, self.body.trim()),
        }
    }
}

impl std::error::Error for ProxiedError {}

/// How an error is shown to the user.
pub(crate) fn render_error(e: &anyhow::Error) -> String {
    if e.downcast_ref::<ServerError>().is_some() {
        return e.to_string();
    }
    format!("error: {e:#}")
}

fn map_error(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(status) => {
            let reason = if status.reason.is_empty() {
                "Unknown".to_owned()
            } else {
                status.reason.clone()
            };
            anyhow!(ServerError {
                reason,
                message: status.message.clone(),
                code: status.code
            })
        }
        other => anyhow!(other),
    }
}

/// Whether an error is the server's NotFound.
pub(crate) fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ServerError>()
        .is_some_and(|s| s.code == 404)
}

/// One served resource, as discovery describes it.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) kind: String,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) namespaced: bool,
    pub(crate) short_names: Vec<String>,
    pub(crate) categories: Vec<String>,
    pub(crate) verbs: Vec<String>,
}

impl Resource {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployment.apps` / `pod`, the prefix of `-o name` output and of messages.
    pub(crate) fn kind_ref(&self) -> String {
        let k = self.kind.to_lowercase();
        if self.group.is_empty() {
            k
        } else {
            format!("{k}.{}", self.group)
        }
    }

    /// The collection URL in `namespace` (or all namespaces / cluster scope for `None`).
    pub(crate) fn url(&self, namespace: Option<&str>, name: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        let mut url = match namespace {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        };
        if let Some(n) = name {
            url.push('/');
            url.push_str(n);
        }
        url
    }
}

/// The API client with discovery.
pub(crate) struct Api {
    client: kube::Client,
    resources: tokio::sync::OnceCell<Vec<Resource>>,
}

const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
const DISCOVERY_ACCEPT: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";

impl Api {
    pub(crate) fn new(client: kube::Client) -> Self {
        Api {
            client,
            resources: tokio::sync::OnceCell::new(),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        accept: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<String> {
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(header::ACCEPT, accept);
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder.body(body)?;
        self.client.request_text(request).await.map_err(map_error)
    }

    pub(crate) async fn get_json(&self, url: &str) -> Result<Value> {
        Ok(serde_json::from_str(
            &self
                .send(Method::GET, url, "application/json", None, Vec::new())
                .await?,
        )?)
    }

    pub(crate) async fn get_table(&self, url: &str) -> Result<Value> {
        Ok(serde_json::from_str(
            &self
                .send(Method::GET, url, TABLE_ACCEPT, None, Vec::new())
                .await?,
        )?)
    }

    pub(crate) async fn write(
        &self,
        method: Method,
        url: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Value> {
        let text = self
            .send(
                method,
                url,
                "application/json",
                Some(content_type),
                serde_json::to_vec(body)?,
            )
            .await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A watch: each item is one event line.
    pub(crate) async fn watch(
        &self,
        url: &str,
        table: bool,
    ) -> Result<impl Stream<Item = Result<Value>> + use<>> {
        let accept = if table {
            TABLE_ACCEPT
        } else {
            "application/json"
        };
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::ACCEPT, accept)
            .body(Vec::new())?;
        let reader = self
            .client
            .request_stream(request)
            .await
            .map_err(map_error)?;
        Ok(reader
            .lines()
            .map_err(anyhow::Error::from)
            .try_filter(|l| futures::future::ready(!l.trim().is_empty()))
            .and_then(|line| async move { Ok(serde_json::from_str::<Value>(&line)?) }))
    }

    /// A streamed answer of a proxied service, line by line. Its error answers are whatever
    /// the service sends (not Status objects), so they come back as [`ProxiedError`].
    pub(crate) async fn proxied_lines(
        &self,
        url: &str,
        accept: &str,
    ) -> Result<impl Stream<Item = Result<String>> + use<>> {
        use futures::AsyncReadExt;
        use http_body_util::BodyExt;
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(header::ACCEPT, accept)
            .body(kube::client::Body::empty())?;
        let res = self.client.send(request).await.map_err(map_error)?;
        let status = res.status();
        let mut body = res
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other)
            .into_async_read();
        if !status.is_success() {
            let mut text = String::new();
            body.read_to_string(&mut text).await?;
            return Err(anyhow!(ProxiedError {
                status: status.as_u16(),
                body: text,
            }));
        }
        Ok(body.lines().map_err(anyhow::Error::from))
    }

    /// A JSON answer of a proxied service.
    pub(crate) async fn proxied_json(&self, url: &str) -> Result<Value> {
        let lines: Vec<String> = self
            .proxied_lines(url, "application/json")
            .await?
            .try_collect()
            .await?;
        Ok(serde_json::from_str(&lines.join("\n"))?)
    }

    /// Every resource the server serves (preferred versions first).
    pub(crate) async fn resources(&self) -> Result<&[Resource]> {
        let list = self
            .resources
            .get_or_try_init(|| async {
                let mut all = Vec::new();
                for path in ["/api", "/apis"] {
                    let text = self
                        .send(Method::GET, path, DISCOVERY_ACCEPT, None, Vec::new())
                        .await?;
                    let doc: Value = serde_json::from_str(&text)?;
                    all.extend(parse_discovery(&doc));
                }
                Ok::<_, anyhow::Error>(all)
            })
            .await?;
        Ok(list)
    }

    /// Resolve a type name as kubectl does: plural, singular, short name or kind, optionally
    /// `.group`-qualified.
    pub(crate) async fn resolve(&self, name: &str) -> Result<Resource> {
        let lower = name.to_lowercase();
        let (name, group) = match lower.split_once('.') {
            Some((n, g)) => (n.to_owned(), Some(g.to_owned())),
            None => (lower, None),
        };
        self.resources()
            .await?
            .iter()
            .find(|r| {
                group
                    .as_deref()
                    .is_none_or(|g| g == r.group || r.group.starts_with(&format!("{g}.")))
                    && (r.plural == name
                        || r.singular == name
                        || r.kind.to_lowercase() == name
                        || r.short_names.contains(&name))
            })
            .cloned()
            .ok_or_else(|| anyhow!("the server doesn't have a resource type \"{name}\""))
    }

    /// Resolve a manifest's apiVersion and kind.
    pub(crate) async fn resolve_kind(&self, api_version: &str, kind: &str) -> Result<Resource> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.resources()
            .await?
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
            .cloned()
            .ok_or_else(|| anyhow!("resource mapping not found for kind \"{kind}\" in version \"{api_version}\": ensure CRDs are installed first"))
    }

    /// Resources in a category (`all`).
    pub(crate) async fn category(&self, category: &str) -> Result<Vec<Resource>> {
        Ok(self
            .resources()
            .await?
            .iter()
            .filter(|r| r.categories.iter().any(|c| c == category))
            .cloned()
            .collect())
    }
}

/// Resources from an aggregated discovery document; the first version of each group is the
/// preferred one and comes first.
fn parse_discovery(doc: &Value) -> Vec<Resource> {
    let mut out = Vec::new();
    for group in doc["items"].as_array().into_iter().flatten() {
        let group_name = group["metadata"]["name"].as_str().unwrap_or_default();
        for version in group["versions"].as_array().into_iter().flatten() {
            let v = version["version"].as_str().unwrap_or_default();
            for r in version["resources"].as_array().into_iter().flatten() {
                let strings = |key: &str| -> Vec<String> {
                    r[key]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                };
                out.push(Resource {
                    group: group_name.to_owned(),
                    version: v.to_owned(),
                    kind: r["responseKind"]["kind"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    plural: r["resource"].as_str().unwrap_or_default().to_owned(),
                    singular: r["singularResource"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    namespaced: r["scope"] == "Namespaced",
                    short_names: strings("shortNames"),
                    categories: strings("categories"),
                    verbs: strings("verbs"),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn discovery_documents_parse() {
        let doc = json!({"items": [{"metadata": {"name": "apps"}, "versions": [{"version": "v1", "resources": [
            {"resource": "deployments", "responseKind": {"kind": "Deployment"}, "scope": "Namespaced",
             "singularResource": "deployment", "shortNames": ["deploy"], "categories": ["all"], "verbs": ["get"]}]}]}]});
        let r = &parse_discovery(&doc)[0];
        assert_eq!(
            (r.plural.as_str(), r.namespaced, r.kind_ref()),
            ("deployments", true, "deployment.apps".to_owned())
        );
        assert_eq!(
            r.url(Some("d"), Some("web")),
            "/apis/apps/v1/namespaces/d/deployments/web"
        );
    }
}
