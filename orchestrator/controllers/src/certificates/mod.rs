//! CertificateSigningRequests: the approver (auto-approves what nodes are entitled to) and the
//! signer (issues approved requests for the `kubernetes.io/*` signers with the cluster CA). This
//! is what lets a node join with only a bootstrap token.

pub mod approver;
mod request;
pub mod signer;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};

pub use signer::CertificateAuthority;

/// Client certificates for kube-apiserver (any user).
pub const SIGNER_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Client certificates for node agents (`system:node:<name>` in `system:nodes`).
pub const SIGNER_KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Serving certificates for node agents.
pub const SIGNER_KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";

fn conditions(csr: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    conditions(csr)
        .iter()
        .any(|c| c.type_ == kind && c.status == "True")
}

fn is_issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

#[cfg(test)]
pub(crate) mod test_support {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    use super::CertificateAuthority;

    /// A PEM certificate request for `cn` in `orgs` with alternative `names` (DNS or IP).
    pub(crate) fn request(cn: &str, orgs: &[&str], names: &[&str]) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        params.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .collect();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    pub(crate) fn ca() -> CertificateAuthority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}
