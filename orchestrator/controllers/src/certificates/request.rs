//! What a PEM certificate request asks for: subject and alternative names, read with
//! x509-parser (rcgen's parser collapses repeated subject attributes like several O values).

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The parts of a request the approver and signers decide on.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Requested {
    pub(crate) common_name: Option<String>,
    pub(crate) organizations: Vec<String>,
    pub(crate) dns_names: Vec<String>,
    pub(crate) ip_addresses: usize,
    /// Email addresses and URIs: no `kubernetes.io` signer issues these.
    pub(crate) other_names: usize,
    pub(crate) is_ca: bool,
}

/// Parse a PEM `CERTIFICATE REQUEST` and check its self-signature.
pub(crate) fn parse(pem: &[u8]) -> Result<Requested, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM block: {e}"))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block type must be CERTIFICATE REQUEST, not {}",
            pem.label
        ));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| format!("the certificate request does not parse: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "the request's signature does not verify".to_owned())?;
    let subject = &csr.certification_request_info.subject;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        a.as_str().map(str::to_owned).unwrap_or_default()
    };
    let mut out = Requested {
        common_name: subject.iter_common_name().next().map(text),
        organizations: subject.iter_organization().map(text).collect(),
        ..Requested::default()
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(n) => out.dns_names.push((*n).to_owned()),
                        GeneralName::IPAddress(_) => out.ip_addresses += 1,
                        _ => out.other_names += 1,
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => out.is_ca |= bc.ca,
            _ => {}
        }
    }
    Ok(out)
}
