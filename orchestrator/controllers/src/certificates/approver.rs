//! The CSR approver (upstream's csrapproving controller): approves, without a human, the
//! requests a node is entitled to. Everything else waits for `kubectl certificate approve`.
//!
//! - node client certificates (`kube-apiserver-client-kubelet`, CN `system:node:<name>`, O
//!   `system:nodes`, client usages, no alternative names) asked for by a bootstrap token
//!   (`system:bootstrappers`, upstream's `nodeclient` permission), by an admin, or by the same
//!   node renewing its own (`selfnodeclient`);
//! - node serving certificates (`kubelet-serving`) asked for by the node they name. Upstream
//!   leaves these to an operator or a third-party approver; Skiff approves them because the API
//!   server verifies agents against the cluster CA and a joined node must be reachable for
//!   `kubectl logs`/`exec` (k3s makes the same choice by issuing agent certificates itself).
//!   An admin (`system:masters`) running an agent with the admin kubeconfig is approved too.
//!
//! With no RBAC engine yet, group membership stands in for upstream's SubjectAccessReview.

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::request::{Requested, parse};
use super::{SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING, has_condition, is_issued};
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};

const NAME: &str = "csrapproving";

/// Run the approver until `shutdown`.
pub async fn run(client: kube::Client, metrics: ControllerMetrics, shutdown: CancellationToken) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let reconcile_api = api.clone();
    runner::run(
        NAME,
        api,
        move |csr| reconcile(reconcile_api.clone(), csr),
        metrics,
        shutdown,
    )
    .await;
}

async fn reconcile(
    api: Api<CertificateSigningRequest>,
    csr: Arc<CertificateSigningRequest>,
) -> Result<Action, ReconcileError> {
    if has_condition(&csr, "Approved") || has_condition(&csr, "Denied") || is_issued(&csr) {
        return Ok(Action::await_change());
    }
    let Some(message) = decide(&csr) else {
        return Ok(Action::await_change());
    };
    let now = Time(jiff::Timestamp::now());
    let patch = json!({"status": {"conditions": [{
        "type": "Approved",
        "status": "True",
        "reason": "AutoApproved",
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }]}});
    api.patch_approval(
        &csr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    tracing::info!(csr = %csr.name_any(), signer = %csr.spec.signer_name, "approved");
    Ok(Action::await_change())
}

/// The approval message when `csr` qualifies for automatic approval.
pub(crate) fn decide(csr: &CertificateSigningRequest) -> Option<&'static str> {
    let spec = &csr.spec;
    let requested = parse(&spec.request.0).ok()?;
    let usages: Vec<&str> = spec.usages.iter().flatten().map(String::as_str).collect();
    let username = spec.username.as_deref().unwrap_or_default();
    let groups: Vec<&str> = spec.groups.iter().flatten().map(String::as_str).collect();
    let in_group = |g: &str| groups.contains(&g);
    let names_the_requester = requested.common_name.as_deref() == Some(username);
    match spec.signer_name.as_str() {
        SIGNER_KUBELET_CLIENT if is_node_client(&requested, &usages) => {
            if names_the_requester && in_group("system:nodes") {
                Some("Auto approving self kubelet client certificate after SubjectAccessReview.")
            } else if in_group("system:bootstrappers") || in_group("system:masters") {
                Some("Auto approving kubelet client certificate after SubjectAccessReview.")
            } else {
                None
            }
        }
        SIGNER_KUBELET_SERVING
            if is_node_serving(&requested, &usages)
                && ((names_the_requester && in_group("system:nodes"))
                    || in_group("system:masters")) =>
        {
            Some("Auto approving kubelet serving certificate for the node that asked for it.")
        }
        _ => None,
    }
}

fn is_node_identity(r: &Requested) -> bool {
    r.common_name
        .as_deref()
        .is_some_and(|cn| cn.len() > "system:node:".len() && cn.starts_with("system:node:"))
        && r.organizations == ["system:nodes"]
        && !r.is_ca
}

/// Usages within `allowed` that include `required`.
fn usages_fit(usages: &[&str], allowed: &[&str], required: &str) -> bool {
    usages.contains(&required) && usages.iter().all(|u| allowed.contains(u))
}

pub(crate) fn is_node_client(r: &Requested, usages: &[&str]) -> bool {
    is_node_identity(r)
        && r.dns_names.is_empty()
        && r.ip_addresses == 0
        && r.other_names == 0
        && usages_fit(
            usages,
            &["digital signature", "key encipherment", "client auth"],
            "client auth",
        )
}

pub(crate) fn is_node_serving(r: &Requested, usages: &[&str]) -> bool {
    is_node_identity(r)
        && (!r.dns_names.is_empty() || r.ip_addresses > 0)
        && r.other_names == 0
        && usages_fit(
            usages,
            &["digital signature", "key encipherment", "server auth"],
            "server auth",
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::test_support::request;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(
        signer: &str,
        pem: String,
        usages: &[&str],
        user: &str,
        groups: &[&str],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const CLIENT: &[&str] = &["digital signature", "client auth"];
    const BOOTSTRAP: &[&str] = &["system:bootstrappers", "system:authenticated"];

    #[test]
    fn bootstrap_tokens_get_node_client_certificates() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            pem,
            CLIENT,
            "system:bootstrap:abcdef",
            BOOTSTRAP,
        );
        assert!(decide(&c).unwrap().contains("kubelet client"));
    }

    #[test]
    fn nodes_renew_only_their_own() {
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let nodes = &["system:nodes", "system:authenticated"];
        let own = csr(
            SIGNER_KUBELET_CLIENT,
            pem.clone(),
            CLIENT,
            "system:node:n1",
            nodes,
        );
        assert!(decide(&own).unwrap().contains("self"));
        let other = csr(SIGNER_KUBELET_CLIENT, pem, CLIENT, "system:node:n2", nodes);
        assert_eq!(decide(&other), None);
    }

    #[test]
    fn wrong_identity_usages_or_names_wait_for_a_human() {
        let cases = [
            request("system:node:n1", &["system:masters"], &[]),
            request("system:node:n1", &["system:nodes", "extra"], &[]),
            request("alice", &["system:nodes"], &[]),
            request("system:node:n1", &["system:nodes"], &["n1.example"]),
        ];
        for pem in cases {
            let c = csr(
                SIGNER_KUBELET_CLIENT,
                pem,
                CLIENT,
                "system:bootstrap:a",
                BOOTSTRAP,
            );
            assert_eq!(decide(&c), None);
        }
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            pem.clone(),
            &["client auth", "server auth"],
            "system:bootstrap:a",
            BOOTSTRAP,
        );
        assert_eq!(decide(&c), None);
        let c = csr(
            "kubernetes.io/kube-apiserver-client",
            pem,
            CLIENT,
            "system:bootstrap:a",
            BOOTSTRAP,
        );
        assert_eq!(decide(&c), None, "plain client certificates need a human");
    }

    #[test]
    fn serving_certificates_only_for_the_node_itself() {
        let pem = request("system:node:n1", &["system:nodes"], &["n1", "10.0.0.5"]);
        let usages = &["digital signature", "key encipherment", "server auth"];
        let nodes = &["system:nodes"];
        let own = csr(
            SIGNER_KUBELET_SERVING,
            pem.clone(),
            usages,
            "system:node:n1",
            nodes,
        );
        assert!(decide(&own).is_some());
        let by_token = csr(
            SIGNER_KUBELET_SERVING,
            pem,
            usages,
            "system:bootstrap:a",
            BOOTSTRAP,
        );
        assert_eq!(decide(&by_token), None);
    }
}
