//! Objects `skiffd up` keeps in the cluster, as k3s applies its packaged manifests: the log
//! collector DaemonSet (`deploy/addons/log-collector.yaml`). Applied with server-side apply at
//! every start, so an upgrade rolls the new image out and a user's extra fields survive.

use k8s_openapi::api::apps::v1::DaemonSet;
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

/// Create or update the addons, retrying while the API server is still starting.
pub(crate) async fn apply(client: kube::Client, search_url: &str) -> anyhow::Result<()> {
    let ds = log_collector(search_url)?;
    let api: Api<DaemonSet> = Api::namespaced(client, "kube-system");
    let params = PatchParams::apply("skiffd").force();
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1.. {
        match api
            .patch("skiff-log-collector", &params, &Patch::Apply(&ds))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 10 => {
                tracing::warn!(error = %e, attempt, "applying the log collector DaemonSet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the loop returns")
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
    }
}
