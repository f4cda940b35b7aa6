//! TLS bootstrap (kubelet's `--bootstrap-kubeconfig` flow, kubeadm's discovery): a node that has
//! only the server URL and a bootstrap token
//!
//! 1. reads `kube-public/cluster-info` anonymously and trusts the CA in it only if its public-key
//!    hash matches `--ca-cert-hash` (or uses a CA file it was given),
//! 2. asks for a client certificate (CN `system:node:<name>`, O `system:nodes`) with a
//!    CertificateSigningRequest authenticated by the token, waits until it is approved and
//!    issued, and writes a kubeconfig with it, which later starts reuse;
//! 3. with that identity, asks for its serving certificate the same way (signer
//!    `kubernetes.io/kubelet-serving`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use x509_parser::prelude::FromDer;

/// How a joining node decides to trust the cluster CA it discovers.
#[derive(Debug, Clone)]
pub enum CaTrust {
    /// Trust the CA whose public key hashes to one of these (`sha256:<hex>`).
    Hashes(Vec<String>),
    /// Use this CA certificate (PEM) and skip discovery's trust decision.
    Pem(String),
    /// Trust whatever the server presents (`--unsafe-skip-ca-verification`).
    Insecure,
}

/// Credentials that let a node join: the server and a bootstrap token.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// API server URL, `https://host:port`.
    pub server: String,
    /// Bootstrap token `<id>.<secret>`.
    pub token: String,
    /// How to trust the CA.
    pub trust: CaTrust,
    /// This node's name.
    pub node_name: String,
}

/// PEM material of one certificate.
#[derive(Clone)]
pub struct KeyAndCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
}

/// `sha256:<hex>` of the DER SubjectPublicKeyInfo of the first certificate in `pem`: the form
/// `kubeadm join --discovery-token-ca-cert-hash` takes.
pub fn ca_cert_hash(pem: &str) -> Result<String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).context("the CA is not PEM")?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents)
        .context("the CA certificate does not parse")?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The PEM certificate's notAfter, when it parses.
fn not_after(pem: &str) -> Option<i64> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&block.contents).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// True when the certificate at `path` exists and stays valid for at least another day.
fn still_valid(cert_pem: &str) -> bool {
    not_after(cert_pem).is_some_and(|t| t > jiff::Timestamp::now().as_second() + 86_400)
}

fn client_for(server: &str, ca_pem: Option<&str>, token: Option<&str>) -> Result<Client> {
    let mut config = kube::Config::new(server.parse().context("the server URL is invalid")?);
    match ca_pem {
        Some(pem) => {
            let (_, block) =
                x509_parser::pem::parse_x509_pem(pem.as_bytes()).context("the CA is not PEM")?;
            config.root_cert = Some(vec![block.contents]);
        }
        None => config.accept_invalid_certs = true,
    }
    if let Some(token) = token {
        config.auth_info.token = Some(token.to_owned().into());
    }
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    Client::try_from(config).context("building the API client")
}

/// Step 1: the cluster CA, decided by `trust`.
pub async fn discover_ca(server: &str, trust: &CaTrust) -> Result<String> {
    if let CaTrust::Pem(pem) = trust {
        return Ok(pem.clone());
    }
    // Anonymous read of the public cluster-info over an unverified connection: what it says is
    // trusted only after the hash check below.
    let client = client_for(server, None, None)?;
    let cm = Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .with_context(|| format!("reading kube-public/cluster-info from {server}"))?;
    let kubeconfig = cm
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .context("cluster-info has no kubeconfig")?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .context("cluster-info's kubeconfig does not parse")?;
    let ca_data = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref()?.certificate_authority_data.clone())
        .context("cluster-info names no certificate authority")?;
    let ca_pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ca_data.trim())
            .context("cluster-info's certificate-authority-data is not base64")?,
    )?;
    if let CaTrust::Hashes(wanted) = trust {
        let actual = ca_cert_hash(&ca_pem)?;
        if !wanted.iter().any(|w| w.eq_ignore_ascii_case(&actual)) {
            bail!(
                "the cluster CA's public key hash is {actual}, which matches none of the \
                 --ca-cert-hash values given: refusing to trust {server}"
            );
        }
    }
    Ok(ca_pem)
}

fn node_request(node_name: &str, names: &[String]) -> Result<(KeyPair, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{node_name}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    for name in names {
        params.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.clone().try_into()?),
        });
    }
    let pem = params.serialize_request(&key)?.pem()?;
    Ok((key, pem))
}

/// Create a CSR and wait until it is issued (or denied, or failed, or `shutdown`).
async fn request_certificate(
    client: Client,
    prefix: &str,
    signer: &str,
    usages: &[&str],
    node_name: &str,
    names: &[String],
    shutdown: &CancellationToken,
) -> Result<KeyAndCert> {
    let (key, pem) = node_request(node_name, names)?;
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let suffix: String = (0..8)
        .map(|_| char::from(b'a' + rand::random_range(0..26u8)))
        .collect();
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(format!("{prefix}-{suffix}")),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(pem.into_bytes()),
            signer_name: signer.to_owned(),
            usages: Some(usages.iter().map(|u| (*u).to_owned()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
                "the API server rejected the credentials (401 Unauthorized): check the \
                 bootstrap token and that it has not expired"
            ),
            _ => anyhow::Error::new(e).context("creating the certificate signing request"),
        })?;
    let name = created.metadata.name.unwrap_or_default();
    tracing::info!(csr = %name, %signer, "certificate signing request created, waiting for approval");
    loop {
        let csr = api.get(&name).await.context("reading the CSR")?;
        let status = csr.status.unwrap_or_default();
        for c in status.conditions.iter().flatten() {
            if c.status == "True" && matches!(c.type_.as_str(), "Denied" | "Failed") {
                bail!(
                    "certificate signing request {name} was {}: {}",
                    c.type_.to_lowercase(),
                    c.message.as_deref().unwrap_or("no reason given")
                );
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            tracing::info!(csr = %name, "certificate issued");
            return Ok(KeyAndCert {
                cert_pem: String::from_utf8(cert.0).context("issued certificate is not PEM")?,
                key_pem: key.serialize_pem(),
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("stopped while waiting for {name} to be issued"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Write a private file (mode 0600) atomically, creating its directory.
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a crash never leaves half a key behind.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Step 2: obtain a node client certificate with the token and write `kubeconfig`. Returns
/// the cluster CA (PEM).
pub async fn join(
    request: &JoinRequest,
    kubeconfig: &Path,
    shutdown: &CancellationToken,
) -> Result<String> {
    let ca_pem = discover_ca(&request.server, &request.trust).await?;
    let ca_for_client = match request.trust {
        CaTrust::Insecure => None,
        _ => Some(ca_pem.as_str()),
    };
    let client = client_for(&request.server, ca_for_client, Some(&request.token))?;
    let cert = request_certificate(
        client,
        "node-csr",
        "kubernetes.io/kube-apiserver-client-kubelet",
        &["digital signature", "client auth"],
        &request.node_name,
        &[],
        shutdown,
    )
    .await?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = format!("system:node:{}", request.node_name);
    let mut cluster = json!({"server": request.server, "certificate-authority-data": b64(&ca_pem)});
    if ca_for_client.is_none() {
        cluster["insecure-skip-tls-verify"] = json!(true);
    }
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "skiff", "cluster": cluster}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(&cert.cert_pem),
            "client-key-data": b64(&cert.key_pem)}}],
        "contexts": [{"name": "skiff", "context": {"cluster": "skiff", "user": user}}],
        "current-context": "skiff",
    });
    write_private(kubeconfig, &serde_norway::to_string(&config)?)?;
    tracing::info!(path = %kubeconfig.display(), "joined: node credentials written");
    Ok(ca_pem)
}

/// Step 3: this node's serving certificate for `names`, issued through the
/// `kubernetes.io/kubelet-serving` signer and kept in `dir` (reused while valid for the same
/// names).
pub async fn serving_certificate(
    client: Client,
    node_name: &str,
    names: &[String],
    dir: &Path,
    shutdown: &CancellationToken,
) -> Result<KeyAndCert> {
    let (cert_path, key_path, names_path) = (
        dir.join("kubelet.crt"),
        dir.join("kubelet.key"),
        dir.join("kubelet.names"),
    );
    let names_line = names.join(",");
    if let (Ok(cert_pem), Ok(key_pem), Ok(old_names)) = (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
        std::fs::read_to_string(&names_path),
    ) && old_names == names_line
        && still_valid(&cert_pem)
    {
        return Ok(KeyAndCert { cert_pem, key_pem });
    }
    let cert = request_certificate(
        client,
        "node-serving",
        "kubernetes.io/kubelet-serving",
        &["digital signature", "key encipherment", "server auth"],
        node_name,
        names,
        shutdown,
    )
    .await?;
    write_private(&key_path, &cert.key_pem)?;
    write_private(&cert_path, &cert.cert_pem)?;
    write_private(&names_path, &names_line)?;
    Ok(cert)
}

/// The CA a kubeconfig trusts (its `certificate-authority-data` or `certificate-authority`).
pub fn kubeconfig_ca(kubeconfig: &Path) -> Result<Option<String>> {
    let config = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let Some(cluster) = config.clusters.first().and_then(|c| c.cluster.clone()) else {
        return Ok(None);
    };
    if let Some(data) = cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("certificate-authority-data is not base64")?;
        return Ok(Some(String::from_utf8(pem)?));
    }
    match cluster.certificate_authority {
        Some(path) => Ok(Some(std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading the CA file {path} named in {}",
                kubeconfig.display()
            )
        })?)),
        None => Ok(None),
    }
}

/// True when the kubeconfig at `path` holds a client certificate valid for at least another
/// day (a joined node reuses it instead of joining again).
pub fn kubeconfig_still_valid(path: &Path) -> bool {
    let Ok(config) = kube::config::Kubeconfig::read_from(path) else {
        return false;
    };
    config
        .auth_infos
        .first()
        .and_then(|a| a.auth_info.as_ref()?.client_certificate_data.clone())
        .and_then(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .ok()
        })
        .and_then(|pem| String::from_utf8(pem).ok())
        .is_some_and(|pem| still_valid(&pem))
}

/// Where a joined node keeps its credentials under its state directory.
pub fn credentials_dir(agent_root: &Path) -> PathBuf {
    agent_root.join("pki")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_hash_is_the_sha256_of_the_public_key_info() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::default().self_signed(&key).unwrap();
        let hash = ca_cert_hash(&cert.pem()).unwrap();
        let expected = ring::digest::digest(
            &ring::digest::SHA256,
            &rcgen::PublicKeyData::subject_public_key_info(&key),
        );
        assert_eq!(hash.len(), "sha256:".len() + 64);
        assert!(
            hash.ends_with(
                &expected
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        );
        assert!(ca_cert_hash("not pem").is_err());
    }

    #[test]
    fn node_requests_carry_the_node_identity() {
        let (_, pem) = node_request("n1", &["n1".into(), "10.0.0.7".into()]).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
                .unwrap();
        let subject = &csr.certification_request_info.subject;
        assert_eq!(
            subject.iter_common_name().next().unwrap().as_str().unwrap(),
            "system:node:n1"
        );
        assert_eq!(
            subject
                .iter_organization()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:nodes"
        );
    }
}
