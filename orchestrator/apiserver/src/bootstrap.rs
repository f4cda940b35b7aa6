//! Objects every cluster starts with: the system namespaces, their `default` ServiceAccounts,
//! the `kubernetes` Service and Endpoints that point at the API server, and kubeadm's
//! `kube-public/cluster-info` ConfigMap (a kubeconfig with the server and the CA, no
//! credentials) from which joining nodes learn the CA they then pin by its hash.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;

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
pub(crate) async fn bootstrap(
    state: &AppState,
    address: IpAddr,
    port: u16,
    ca_pem: &str,
) -> ApiResult<()> {
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
    publish_cluster_info(
        state,
        &format!("https://{}", SocketAddr::new(address, port)),
        ca_pem,
    )
    .await
}

/// Write `kube-public/cluster-info` for this start (the address may have changed).
async fn publish_cluster_info(state: &AppState, server: &str, ca_pem: &str) -> ApiResult<()> {
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "", "cluster": {
            "server": server,
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        }}],
        "contexts": [], "current-context": "", "preferences": {}, "users": [],
    });
    let data = json!({"kubeconfig": serde_norway::to_string(&kubeconfig).unwrap_or_default()});
    let info = state
        .registry()
        .get("", "v1", "configmaps")
        .expect("registered")
        .clone();
    let objects = Objects::new(state, &info);
    match objects.get(Some("kube-public"), "cluster-info").await {
        Ok(current) if current.get("data") == Some(&data) => Ok(()),
        Ok(_) => {
            objects
                .update(
                    Some("kube-public"),
                    "cluster-info",
                    None,
                    false,
                    |current| {
                        let mut new = current.clone();
                        new["data"] = data.clone();
                        Ok((new, None))
                    },
                )
                .await?;
            Ok(())
        }
        Err(_) => {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"}, "data": data});
            create_if_missing(state, "configmaps", Some("kube-public"), cm).await
        }
    }
}
