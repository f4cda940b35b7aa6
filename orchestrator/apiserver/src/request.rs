//! Reading a request: which resource a path names, and the query options of the Kubernetes API
//! (form-encoded, unknown parameters ignored, `+` meaning space).

use std::collections::HashMap;

use axum::http::HeaderMap;
use skiff_api::{Registry, ResourceInfo};

use crate::error::{ApiError, ApiResult};

/// The resource a request path names.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The resource in the version the request was made in.
    pub info: ResourceInfo,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Object name, if the path names one.
    pub name: Option<String>,
    /// Subresource (`status`, `scale`, `log`, …).
    pub subresource: Option<String>,
    /// Anything after the subresource (`nodes/n1/proxy/<path>`).
    #[allow(
        dead_code,
        reason = "read by the node proxy, which arrives with the agent"
    )]
    pub rest: Option<String>,
}

impl Target {
    /// Whether the request addresses a collection rather than one object.
    pub(crate) fn is_collection(&self) -> bool {
        self.name.is_none()
    }
}

/// Resolve `segments` (the path after `/api/v1` or `/apis/<g>/<v>`) against the registry.
pub(crate) fn parse_target(
    registry: &Registry,
    group: &str,
    version: &str,
    segments: &[&str],
) -> ApiResult<Target> {
    let lookup = |plural: &str| -> ApiResult<ResourceInfo> {
        registry
            .get(group, version, plural)
            .cloned()
            .ok_or_else(ApiError::path_not_found)
    };
    let target = |info: ResourceInfo, ns: Option<&str>, rest: &[&str]| -> ApiResult<Target> {
        let name = rest.first().map(|s| (*s).to_owned());
        let subresource = rest.get(1).map(|s| (*s).to_owned());
        if let Some(sub) = &subresource
            && info.subresource(sub).is_none()
        {
            return Err(ApiError::path_not_found());
        }
        let tail = (rest.len() > 2).then(|| rest[2..].join("/"));
        Ok(Target {
            info,
            namespace: ns.map(str::to_owned),
            name,
            subresource,
            rest: tail,
        })
    };
    match segments {
        [] => Err(ApiError::path_not_found()),
        // namespaces/<ns>/<plural>[/<name>[/<sub>...]] when <plural> is a namespaced resource
        ["namespaces", ns, plural, rest @ ..]
            if registry
                .get(group, version, plural)
                .is_some_and(|r| r.namespaced) =>
        {
            target(lookup(plural)?, Some(ns), rest)
        }
        [plural, rest @ ..] => {
            let info = lookup(plural)?;
            if info.namespaced && !rest.is_empty() {
                // A namespaced resource addressed without a namespace: only lists and watches.
                return Err(ApiError::path_not_found());
            }
            target(info, None, rest)
        }
    }
}

/// Query parameters of the Kubernetes API, as upstream's `ListOptions`, `CreateOptions`, … (one
/// struct because requests mix them freely).
#[derive(Debug, Clone, Default)]
pub(crate) struct Query {
    raw: HashMap<String, Vec<String>>,
}

impl Query {
    /// Decode a query string.
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut raw: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            raw.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Query { raw }
    }

    /// The first value of a parameter.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.raw
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Every value of a repeated parameter (`command=ls&command=-la`).
    pub(crate) fn get_all(&self, key: &str) -> Vec<String> {
        self.raw.get(key).cloned().unwrap_or_default()
    }

    /// A boolean parameter (`true`/`1`).
    pub(crate) fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    /// An integer parameter; a malformed one is a 400.
    pub(crate) fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `?dryRun=All`.
    pub(crate) fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: \"{other}\" is not a valid dry run value: supported values: \"All\""
            ))),
        }
    }

    /// `?fieldValidation=` (Ignore, Warn, Strict); upstream's default is Warn.
    pub(crate) fn field_validation(&self) -> ApiResult<FieldValidation> {
        match self.get("fieldValidation") {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got: {other}"
            ))),
        }
    }
}

/// What to do with fields the type does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in a `Warning` header.
    Warn,
    /// Refuse the request.
    Strict,
}

/// Whether the client asked for a `meta.k8s.io` Table.
pub(crate) fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let part = part.replace(' ', "");
            part.contains("as=Table") && part.contains("g=meta.k8s.io")
        })
}

/// The request's media type (`application/json` when absent, parameters stripped).
pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_lowercase()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "application/json".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_upstream() {
        let r = Registry::builtin();
        let t = parse_target(
            &r,
            "",
            "v1",
            &["namespaces", "default", "pods", "web", "log"],
        )
        .unwrap();
        assert_eq!(
            (
                t.info.plural.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("log"))
        );
        let t = parse_target(&r, "", "v1", &["namespaces", "default"]).unwrap();
        assert_eq!(
            (t.info.plural.as_str(), t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = parse_target(&r, "", "v1", &["namespaces", "kube-system", "status"]).unwrap();
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_target(&r, "", "v1", &["pods"]).unwrap();
        assert!(t.is_collection() && t.namespace.is_none());
        let t = parse_target(
            &r,
            "apps",
            "v1",
            &["namespaces", "d", "deployments", "web", "scale"],
        )
        .unwrap();
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        let t = parse_target(
            &r,
            "",
            "v1",
            &["nodes", "n1", "proxy", "metrics", "cadvisor"],
        )
        .unwrap();
        assert_eq!(t.rest.as_deref(), Some("metrics/cadvisor"));
        assert!(parse_target(&r, "", "v1", &["pods", "x"]).is_err());
        assert!(parse_target(&r, "", "v1", &["widgets"]).is_err());
        assert!(parse_target(&r, "", "v1", &["namespaces", "d", "pods", "p", "bogus"]).is_err());
    }

    #[test]
    fn queries_decode_plus_as_space() {
        let q = Query::parse(Some(
            "labelSelector=app+in+%28nginx%2Cx%29&limit=500&watch=1",
        ));
        assert_eq!(q.get("labelSelector"), Some("app in (nginx,x)"));
        assert_eq!(q.int("limit").unwrap(), Some(500));
        assert!(q.flag("watch"));
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
    }
}
