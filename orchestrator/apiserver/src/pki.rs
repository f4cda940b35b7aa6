//! The cluster's certificates: a CA generated on first start and kept in `<data-dir>/pki`, a
//! server certificate for this host (re-issued at each start, so new names are picked up), an
//! admin client certificate (`system:masters`), and the admin kubeconfig.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use serde_json::json;

/// PEM material of one certificate.
#[derive(Clone)]
pub struct CertifiedKey {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// The cluster's PKI on disk.
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate and key.
    pub ca: CertifiedKey,
}

fn validity(params: &mut CertificateParams, years: i32) {
    let now = jiff::Zoned::now().date();
    let (y, m, d) = (i32::from(now.year()), now.month() as u8, now.day() as u8);
    params.not_before = rcgen::date_time_ymd(y - 1, m, d.min(28));
    params.not_after = rcgen::date_time_ymd(y + years, m, d.min(28));
}

/// Drop repeated DNS names (the same name may arrive as hostname and as an extra SAN).
fn names_dedup(sans: &mut Vec<SanType>) {
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| match s {
        SanType::DnsName(n) => seen.insert(n.as_str().to_owned()),
        _ => true,
    });
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl Pki {
    /// Load the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = if cert_path.exists() && key_path.exists() {
            CertifiedKey {
                cert_pem: std::fs::read_to_string(&cert_path)?,
                key_pem: std::fs::read_to_string(&key_path)?,
            }
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params
                .distinguished_name
                .push(DnType::CommonName, "skiff-ca");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params, 10);
            let cert = params.self_signed(&key)?;
            let ca = CertifiedKey {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            };
            std::fs::write(&cert_path, &ca.cert_pem)?;
            write_private(&key_path, &ca.key_pem)?;
            tracing::info!(path = %cert_path.display(), "generated cluster CA");
            ca
        };
        Ok(Pki {
            dir: dir.to_owned(),
            ca,
        })
    }

    fn issue(&self, params: CertificateParams) -> Result<CertifiedKey> {
        let ca_key = KeyPair::from_pem(&self.ca.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca.cert_pem, ca_key)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A serving certificate for `common_name` valid for `names` (DNS names or IP addresses) and
    /// loopback.
    pub fn serving_certificate(&self, common_name: &str, names: &[String]) -> Result<CertifiedKey> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let mut sans: Vec<SanType> = Vec::new();
        let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse()?, "::1".parse()?];
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => sans.push(SanType::DnsName(n.clone().try_into()?)),
            }
        }
        ips.sort();
        ips.dedup();
        sans.extend(ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        validity(&mut params, 1);
        self.issue(params)
    }

    /// Write a kubeconfig at `path` for a client certificate of `user` in `groups`.
    pub fn write_client_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<()> {
        let cert = self.client_certificate(user, groups)?;
        self.write_kubeconfig(path, server, "skiff", user, &cert)
    }

    fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        cluster_name: &str,
        user: &str,
        cert: &CertifiedKey,
    ) -> Result<()> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": b64(&self.ca.cert_pem)}}],
            "users": [{"name": user, "user": {
                "client-certificate-data": b64(&cert.cert_pem), "client-key-data": b64(&cert.key_pem)}}],
            "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
            "current-context": cluster_name,
            "preferences": {},
        });
        let yaml = serde_norway::to_string(&config)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(path, &yaml)
    }

    /// A serving certificate for this host and the in-cluster names of the API, written next to
    /// the CA.
    pub fn server_certificate(&self, extra_names: &[String]) -> Result<CertifiedKey> {
        let mut names = vec![
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ];
        if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
            let host = host.trim();
            if !host.is_empty() {
                names.push(host.to_owned());
            }
        }
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "skiff-apiserver");
        let mut sans: Vec<SanType> = Vec::new();
        let mut ips: Vec<IpAddr> = vec![
            "127.0.0.1".parse()?,
            "::1".parse()?,
            crate::admission::KUBERNETES_SERVICE_IP.into(),
        ];
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => sans.push(SanType::DnsName(n.try_into()?)),
            }
        }
        ips.sort();
        ips.dedup();
        names_dedup(&mut sans);
        sans.extend(ips.into_iter().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        validity(&mut params, 1);
        let cert = self.issue(params)?;
        std::fs::write(self.dir.join("apiserver.crt"), &cert.cert_pem)?;
        write_private(&self.dir.join("apiserver.key"), &cert.key_pem)?;
        Ok(cert)
    }

    /// A client certificate for `user` in `groups` (CN and O, as upstream reads them).
    pub fn client_certificate(&self, user: &str, groups: &[&str]) -> Result<CertifiedKey> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for g in groups {
            params.distinguished_name.push(DnType::OrganizationName, *g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        validity(&mut params, 1);
        self.issue(params)
    }

    /// Write an admin kubeconfig for `server` to `path` (mode 0600).
    pub fn write_admin_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        cluster_name: &str,
    ) -> Result<()> {
        let existing = self.dir.join("admin.crt");
        let admin = if existing.exists() && self.dir.join("admin.key").exists() {
            CertifiedKey {
                cert_pem: std::fs::read_to_string(&existing)?,
                key_pem: std::fs::read_to_string(self.dir.join("admin.key"))?,
            }
        } else {
            let admin = self.client_certificate("skiff-admin", &["system:masters"])?;
            std::fs::write(&existing, &admin.cert_pem)?;
            write_private(&self.dir.join("admin.key"), &admin.key_pem)?;
            admin
        };
        self.write_kubeconfig(
            path,
            server,
            cluster_name,
            &format!("{cluster_name}-admin"),
            &admin,
        )
    }
}
