//! Objects `skiffd up` keeps in the cluster, as k3s applies its packaged manifests: the log
//! collector DaemonSet (`deploy/addons/log-collector.yaml`), the `skiff-search` Service with
//! its Endpoints, and the `metrics-server` Service, Endpoints and APIService. Applied with server-side apply at
//! every start, so an upgrade rolls the new image out and a user's extra fields survive.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Endpoints, Secret, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube::api::{Patch, PatchParams};

const LOG_COLLECTOR: &str = include_str!("../../../deploy/addons/log-collector.yaml");

/// The log collector DaemonSet shipping to `search_url`.
pub(crate) fn log_collector(search_url: &str) -> anyhow::Result<DaemonSet> {
    let yaml = LOG_COLLECTOR.replace("SEARCH_URL", search_url).replace(
        "SKIFFD_IMAGE",
        &skiff_agent::runtime::images::skiffd_image(),
    );
    Ok(serde_norway::from_str(&yaml)?)
}

/// A headless `kube-system` Service and its Endpoints for a server on this machine's loopback,
/// so clients reach it through the API server (service proxy, aggregation).
fn loopback_service(name: &str, port: u16) -> anyhow::Result<(Service, Endpoints)> {
    let labels = serde_json::json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "skiff",
    });
    let service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }))?;
    let endpoints = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
        "subsets": [{
            "addresses": [{"ip": "127.0.0.1"}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        }],
    }))?;
    Ok((service, endpoints))
}

/// The `kube-system/skiff-search` Service and its Endpoints (the search service on this
/// machine's loopback), so clients reach it through the API server's service proxy:
/// `/api/v1/namespaces/kube-system/services/skiff-search:http/proxy/...`.
pub(crate) fn search_service(port: u16) -> anyhow::Result<(Service, Endpoints)> {
    loopback_service("skiff-search", port)
}

/// The APIService handing `metrics.k8s.io/v1beta1` to `kube-system/metrics-server`, with the
/// priorities metrics-server's manifest uses.
pub(crate) fn metrics_apiservice() -> anyhow::Result<APIService> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1beta1.metrics.k8s.io",
                     "labels": {"app.kubernetes.io/name": "metrics-server", "app.kubernetes.io/part-of": "skiff"}},
        "spec": {
            "group": "metrics.k8s.io",
            "version": "v1beta1",
            "service": {"namespace": "kube-system", "name": "metrics-server"},
            "insecureSkipTLSVerify": true,
            "groupPriorityMinimum": 100,
            "versionPriority": 100,
        },
    }))?)
}

/// Server-side apply `obj` as `name`, retrying while the API server is still starting.
pub(crate) async fn apply_one<K>(api: Api<K>, name: &str, obj: &K) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let params = PatchParams::apply("skiffd").force();
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1.. {
        match api.patch(name, &params, &Patch::Apply(obj)).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 10 => {
                tracing::warn!(error = %e, attempt, name, "applying an addon; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
}

/// The Secret holding the collector's token for the search service (mounted by its pods).
pub(crate) fn collector_token_secret(token: &str) -> anyhow::Result<Secret> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "skiff-log-collector-token", "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/name": "skiff-log-collector", "app.kubernetes.io/part-of": "skiff"}},
        "type": "Opaque",
        "stringData": {"token": token},
    }))?)
}

/// Create or update the log pipeline addons: the search Service pointing at the search service
/// on this machine's loopback `port`, the collector's token Secret, and the log collector
/// DaemonSet shipping to `sink_url`.
pub(crate) async fn apply(
    client: kube::Client,
    port: u16,
    sink_url: &str,
    token: &str,
) -> anyhow::Result<()> {
    let (service, endpoints) = search_service(port)?;
    apply_one(
        Api::<Service>::namespaced(client.clone(), "kube-system"),
        "skiff-search",
        &service,
    )
    .await?;
    apply_one(
        Api::<Endpoints>::namespaced(client.clone(), "kube-system"),
        "skiff-search",
        &endpoints,
    )
    .await?;
    apply_one(
        Api::<Secret>::namespaced(client.clone(), "kube-system"),
        "skiff-log-collector-token",
        &collector_token_secret(token)?,
    )
    .await?;
    let ds = log_collector(sink_url)?;
    apply_one(
        Api::<DaemonSet>::namespaced(client, "kube-system"),
        "skiff-log-collector",
        &ds,
    )
    .await
}

/// Publish the metrics server listening at `addr` on this machine: its Service, Endpoints and
/// the APIService for `metrics.k8s.io`.
pub(crate) async fn apply_metrics_server(
    client: kube::Client,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let (service, endpoints) = loopback_service("metrics-server", addr.port())?;
    apply_one(
        Api::<Service>::namespaced(client.clone(), "kube-system"),
        "metrics-server",
        &service,
    )
    .await?;
    apply_one(
        Api::<Endpoints>::namespaced(client.clone(), "kube-system"),
        "metrics-server",
        &endpoints,
    )
    .await?;
    apply_one(
        Api::<APIService>::all(client),
        "v1beta1.metrics.k8s.io",
        &metrics_apiservice()?,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_manifest_parses_with_its_values() {
        let ds = log_collector("http://127.0.0.1:9428").unwrap();
        let spec = ds.spec.unwrap().template.spec.unwrap();
        let c = &spec.containers[0];
        assert!(c.image.as_deref().unwrap().starts_with("skiff/skiffd:"));
        assert!(
            c.args
                .as_ref()
                .unwrap()
                .contains(&"--sink-url=http://127.0.0.1:9428".to_owned())
        );
        assert_eq!(spec.host_network, Some(true));
        // The token the server issued, from its Secret.
        let token_file = c
            .args
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|a| a.strip_prefix("--sink-token-file="))
            .unwrap();
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| token_file.starts_with(m.mount_path.trim_start_matches('/')))
            .unwrap();
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap();
        let secret = collector_token_secret("t0ken").unwrap();
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name,
            secret.metadata.name
        );
        assert_eq!(secret.string_data.unwrap()["token"], "t0ken");
    }
}
