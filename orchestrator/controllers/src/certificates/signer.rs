//! The CSR signer (upstream's csrsigning controller): issues approved requests for the
//! `kubernetes.io/kube-apiserver-client`, `…-client-kubelet` and `kubelet-serving` signers with
//! the cluster CA, after checking the request against what that signer may issue. A request the
//! signer refuses gets a `Failed` condition (reason `SignerValidationFailure`) instead of a
//! certificate; requests for other signers are left to whoever owns them.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::approver::{is_node_client, is_node_serving};
use super::request::parse;
use super::{
    SIGNER_APISERVER_CLIENT, SIGNER_KUBELET_CLIENT, SIGNER_KUBELET_SERVING, conditions,
    has_condition, is_issued,
};
use crate::metrics::ControllerMetrics;
use crate::runner::{self, ReconcileError};

const NAME: &str = "csrsigning";
/// The longest certificate the signers issue (kube-controller-manager's
/// `--cluster-signing-duration` default).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start a little in the past so clocks that lag do not reject them (upstream
/// backdates by five minutes too).
const BACKDATE: Duration = Duration::from_secs(300);

/// The cluster CA the signer issues with.
#[derive(Clone)]
pub struct CertificateAuthority {
    /// CA certificate, PEM.
    pub cert_pem: String,
    /// CA private key, PEM.
    pub key_pem: String,
}

/// Run the signer until `shutdown`.
pub async fn run(
    client: kube::Client,
    ca: Arc<CertificateAuthority>,
    metrics: ControllerMetrics,
    shutdown: CancellationToken,
) {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let reconcile_api = api.clone();
    runner::run(
        NAME,
        api,
        move |csr| reconcile(reconcile_api.clone(), ca.clone(), csr),
        metrics,
        shutdown,
    )
    .await;
}

async fn reconcile(
    api: Api<CertificateSigningRequest>,
    ca: Arc<CertificateAuthority>,
    csr: Arc<CertificateSigningRequest>,
) -> Result<Action, ReconcileError> {
    let ours = matches!(
        csr.spec.signer_name.as_str(),
        SIGNER_APISERVER_CLIENT | SIGNER_KUBELET_CLIENT | SIGNER_KUBELET_SERVING
    );
    if !ours
        || !has_condition(&csr, "Approved")
        || has_condition(&csr, "Denied")
        || has_condition(&csr, "Failed")
        || is_issued(&csr)
    {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let patch = match sign(&ca, &csr) {
        Ok(Signed::Certificate(pem)) => {
            tracing::info!(csr = %name, signer = %csr.spec.signer_name, "issued");
            json!({"status": {
                "certificate": base64::engine::general_purpose::STANDARD.encode(pem),
            }})
        }
        Ok(Signed::Refused(message)) => {
            tracing::warn!(csr = %name, %message, "refused to sign");
            let now = Time(jiff::Timestamp::now());
            let mut all = serde_json::to_value(conditions(&csr))
                .map_err(|e| ReconcileError::Other(e.to_string()))?;
            all.as_array_mut()
                .expect("conditions serialize as an array")
                .push(json!({
                    "type": "Failed",
                    "status": "True",
                    "reason": "SignerValidationFailure",
                    "message": message,
                    "lastUpdateTime": now,
                    "lastTransitionTime": now,
                }));
            json!({"status": {"conditions": all}})
        }
        Err(e) => return Err(ReconcileError::Other(format!("signing {name}: {e}"))),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Action::await_change())
}

/// What signing a request came to.
#[derive(Debug)]
pub(crate) enum Signed {
    /// The issued certificate, PEM.
    Certificate(String),
    /// The signer may not issue this; the message says why.
    Refused(String),
}

/// Check `csr` against its signer's rules and issue it with `ca`.
pub(crate) fn sign(
    ca: &CertificateAuthority,
    csr: &CertificateSigningRequest,
) -> Result<Signed, rcgen::Error> {
    let spec = &csr.spec;
    let usages: Vec<&str> = spec.usages.iter().flatten().map(String::as_str).collect();
    let requested = match parse(&spec.request.0) {
        Ok(r) => r,
        Err(e) => return Ok(Signed::Refused(e)),
    };
    let refusal = match spec.signer_name.as_str() {
        SIGNER_KUBELET_CLIENT if !is_node_client(&requested, &usages) => Some(
            "kubelet client certificates must name system:node:<name> in system:nodes, carry \
             no alternative names, and use only client auth, digital signature and key \
             encipherment",
        ),
        SIGNER_KUBELET_SERVING if !is_node_serving(&requested, &usages) => Some(
            "kubelet serving certificates must name system:node:<name> in system:nodes, carry \
             DNS or IP alternative names only, and use only server auth, digital signature and \
             key encipherment",
        ),
        SIGNER_APISERVER_CLIENT
            if requested.is_ca
                || !usages.contains(&"client auth")
                || usages.iter().any(|u| {
                    !["client auth", "digital signature", "key encipherment"].contains(u)
                }) =>
        {
            Some(
                "kube-apiserver client certificates must use client auth and only digital \
                 signature and key encipherment besides",
            )
        }
        _ => None,
    };
    if let Some(message) = refusal {
        return Ok(Signed::Refused(message.to_owned()));
    }
    let pem = String::from_utf8_lossy(&spec.request.0);
    let mut request = match CertificateSigningRequestParams::from_pem(&pem) {
        Ok(r) => r,
        Err(e) => return Ok(Signed::Refused(format!("unsupported request: {e}"))),
    };
    let params = &mut request.params;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = usages.iter().filter_map(|u| key_usage(u)).collect();
    params.extended_key_usages = usages.iter().filter_map(|u| extended_usage(u)).collect();
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    let lifetime = spec
        .expiration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(MAX_DURATION, |s| Duration::from_secs(s).min(MAX_DURATION));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, KeyPair::from_pem(&ca.key_pem)?)?;
    Ok(Signed::Certificate(request.signed_by(&issuer)?.pem()))
}

fn key_usage(usage: &str) -> Option<KeyUsagePurpose> {
    Some(match usage {
        "digital signature" => KeyUsagePurpose::DigitalSignature,
        "content commitment" => KeyUsagePurpose::ContentCommitment,
        "key encipherment" => KeyUsagePurpose::KeyEncipherment,
        "data encipherment" => KeyUsagePurpose::DataEncipherment,
        "key agreement" => KeyUsagePurpose::KeyAgreement,
        "encipher only" => KeyUsagePurpose::EncipherOnly,
        "decipher only" => KeyUsagePurpose::DecipherOnly,
        _ => return None,
    })
}

fn extended_usage(usage: &str) -> Option<ExtendedKeyUsagePurpose> {
    Some(match usage {
        "client auth" => ExtendedKeyUsagePurpose::ClientAuth,
        "server auth" => ExtendedKeyUsagePurpose::ServerAuth,
        "code signing" => ExtendedKeyUsagePurpose::CodeSigning,
        "email protection" => ExtendedKeyUsagePurpose::EmailProtection,
        "timestamping" => ExtendedKeyUsagePurpose::TimeStamping,
        "ocsp signing" => ExtendedKeyUsagePurpose::OcspSigning,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificates::test_support::{ca, request};
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use x509_parser::prelude::FromDer;

    fn csr(
        signer: &str,
        pem: String,
        usages: &[&str],
        secs: Option<i32>,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                expiration_seconds: secs,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn issued(signed: Signed) -> String {
        match signed {
            Signed::Certificate(pem) => pem,
            Signed::Refused(m) => panic!("refused: {m}"),
        }
    }

    #[test]
    fn issues_node_client_certificates_the_ca_verifies() {
        let authority = ca();
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(
            SIGNER_KUBELET_CLIENT,
            pem,
            &["digital signature", "client auth"],
            Some(3600),
        );
        let cert = issued(sign(&authority, &c).unwrap());
        let (_, cert_pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let (_, cert) =
            x509_parser::certificate::X509Certificate::from_der(&cert_pem.contents).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(authority.cert_pem.as_bytes()).unwrap();
        let (_, ca_cert) =
            x509_parser::certificate::X509Certificate::from_der(&ca_pem.contents).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:n1"
        );
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300, "expirationSeconds plus the backdate");
        assert!(!cert.is_ca());
    }

    #[test]
    fn refuses_what_the_signer_may_not_issue() {
        let authority = ca();
        let pem = request("system:node:n1", &["system:nodes"], &[]);
        let c = csr(SIGNER_KUBELET_SERVING, pem.clone(), &["server auth"], None);
        assert!(
            matches!(sign(&authority, &c).unwrap(), Signed::Refused(_)),
            "serving without names"
        );
        let c = csr(SIGNER_APISERVER_CLIENT, pem.clone(), &["server auth"], None);
        assert!(matches!(sign(&authority, &c).unwrap(), Signed::Refused(_)));
        let c = csr(
            SIGNER_APISERVER_CLIENT,
            "garbage".into(),
            &["client auth"],
            None,
        );
        assert!(matches!(sign(&authority, &c).unwrap(), Signed::Refused(_)));
        let c = csr(SIGNER_APISERVER_CLIENT, pem, &["client auth"], None);
        issued(sign(&authority, &c).unwrap());
    }

    #[test]
    fn serving_certificates_keep_their_names() {
        let authority = ca();
        let pem = request("system:node:n1", &["system:nodes"], &["n1", "10.1.2.3"]);
        let c = csr(
            SIGNER_KUBELET_SERVING,
            pem,
            &["key encipherment", "digital signature", "server auth"],
            None,
        );
        let cert = issued(sign(&authority, &c).unwrap());
        let (_, p) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&p.contents).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 2);
    }
}
