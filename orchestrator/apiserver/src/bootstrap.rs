//! Objects every cluster starts with: the system namespaces, their `default` ServiceAccounts,
//! and the `kubernetes` Service and Endpoints that point at the API server.

use std::net::IpAddr;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::admission::KUBERNETES_SERVICE_IP;
use crate::error::ApiResult;
use crate::objects::Objects;
use crate::state::AppState;

/// Namespaces created at first start.
pub(crate) const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn create_if_missing(
    state: &AppState,
    plural: &str,
    ns: Option<&str>,
    obj: Value,
) -> ApiResult<()> {
    let info = state
        .registry()
        .get("", "v1", plural)
        .expect("core resource")
        .clone();
    match Objects::new(state, &info).create(ns, obj, false).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == StatusCode::CONFLICT => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create the `default` ServiceAccount of a namespace (the service account controller's job
/// upstream); failures are logged, not returned.
pub(crate) async fn ensure_default_service_account(state: &AppState, namespace: &str) {
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}});
    if let Err(e) = create_if_missing(state, "serviceaccounts", Some(namespace), sa).await {
        tracing::warn!(namespace, error = %e, "creating the default service account failed");
    }
}

/// Make sure the bootstrap objects exist; `address`/`port` is where clients reach this server.
pub(crate) async fn bootstrap(state: &AppState, address: IpAddr, port: u16) -> ApiResult<()> {
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create_if_missing(state, "namespaces", None, obj).await?;
        ensure_default_service_account(state, ns).await;
    }
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"clusterIP": KUBERNETES_SERVICE_IP.to_string(), "type": "ClusterIP",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    });
    create_if_missing(state, "services", Some("default"), service).await?;
    let address = if address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        address
    };
    let subsets = json!([{"addresses": [{"ip": address.to_string()}],
                          "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    let endpoints_info = state
        .registry()
        .get("", "v1", "endpoints")
        .expect("registered")
        .clone();
    let objects = Objects::new(state, &endpoints_info);
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels}, "subsets": subsets});
    match objects.get(Some("default"), "kubernetes").await {
        Ok(_) => {
            objects
                .update(Some("default"), "kubernetes", None, false, |current| {
                    let mut new = current.clone();
                    new["subsets"] = subsets.clone();
                    Ok((new, None))
                })
                .await?;
        }
        Err(_) => create_if_missing(state, "endpoints", Some("default"), endpoints).await?,
    }
    Ok(())
}
