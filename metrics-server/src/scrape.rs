//! Fetching `/metrics/resource` from node agents over HTTPS with a client certificate (the
//! agent, like the kubelet, accepts certificates signed by the cluster CA).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

/// How to reach node agents.
#[derive(Debug, Clone, Default)]
pub struct KubeletTls {
    /// CA that signed the agents' serving certificates (PEM); ignored with `insecure`.
    pub ca_pem: Option<String>,
    /// Client certificate (PEM).
    pub cert_pem: Option<String>,
    /// Its key (PEM).
    pub key_pem: Option<String>,
    /// Do not verify the agents' certificates (`--kubelet-insecure-tls`).
    pub insecure: bool,
}

/// Accepts any server certificate (`--kubelet-insecure-tls`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTPS client for node agents.
#[derive(Clone)]
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl KubeletClient {
    /// Build from PEM material.
    pub fn new(tls: &KubeletTls, timeout: Duration) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if tls.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let ca = tls.ca_pem.as_deref().ok_or_else(|| {
                anyhow::anyhow!("a kubelet CA is needed unless --kubelet-insecure-tls is set")
            })?;
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c?)?;
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&tls.cert_pem, &tls.key_pem) {
            (Some(cert), Some(key)) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
                builder
                    .with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(key.as_bytes())?)?
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = config;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient {
            tls: Arc::new(config),
            timeout,
        })
    }

    /// `GET https://host:port/path`, the body as text.
    pub async fn get(&self, host: &str, port: u16, path: &str) -> anyhow::Result<String> {
        tokio::time::timeout(self.timeout, self.get_inner(host, port, path))
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {:?}", self.timeout))?
    }

    async fn get_inner(&self, host: &str, port: u16, path: &str) -> anyhow::Result<String> {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let name = ServerName::try_from(host.to_owned())?;
        let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::ACCEPT, "text/plain")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            anyhow::bail!("{path} answered {status}");
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
