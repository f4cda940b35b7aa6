//! Authentication: client certificates (CN = user, O = groups, verified against the cluster CA
//! during the TLS handshake), static bearer tokens (upstream's `--token-auth-file` CSV:
//! `token,user,uid,"group1,group2"`) and bootstrap tokens (`<id>.<secret>`, checked against the
//! `bootstrap-token-<id>` Secret in kube-system, as kubeadm's `skiffd agent` joins use them).
//! Requests with none get 401, except health, version and kubeadm's cluster-info, which are
//! public; an invalid bearer token is 401 even there.

use std::collections::HashMap;
use std::path::Path;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl Identity {
    /// The identity requests on the loopback-only insecure port get.
    pub fn insecure_admin() -> Self {
        Identity {
            user: "system:admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }
}

/// The identity the transport established (a verified client certificate), set per connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerIdentity(pub Option<Identity>);

/// Static bearer tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, Identity>,
}

impl TokenAuthenticator {
    /// Parse a token file.
    pub fn from_csv(text: &str) -> Result<Self, String> {
        let mut tokens = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields = split_csv(line);
            if fields.len() < 3 {
                return Err(format!(
                    "token file line {}: want token,user,uid[,groups]",
                    n + 1
                ));
            }
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            tokens.insert(
                fields[0].clone(),
                Identity {
                    user: fields[1].clone(),
                    groups,
                },
            );
        }
        Ok(TokenAuthenticator { tokens })
    }

    /// Load a token file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Self::from_csv(&text).map_err(anyhow::Error::msg)
    }

    /// Add one token.
    pub fn insert(&mut self, token: String, identity: Identity) {
        self.tokens.insert(token, identity);
    }

    fn lookup(&self, token: &str) -> Option<&Identity> {
        self.tokens.get(token)
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields
}

/// Paths anyone may read (upstream's `system:public-info-viewer`, and the ConfigMap joining
/// nodes discover the cluster CA from; the authorizer limits anonymous users to reading it).
fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/api/v1/namespaces/kube-public/configmaps/cluster-info"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Middleware: resolve the caller's [`Identity`] or answer 401.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let from_peer = request
        .extensions()
        .get::<PeerIdentity>()
        .and_then(|p| p.0.clone());
    let bearer = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let from_token = match &bearer {
        Some(t) => match state.tokens().lookup(t) {
            Some(id) => Some(id.clone()),
            None => crate::bootstrap_token::authenticate(&state, t).await,
        },
        None => None,
    };
    // Upstream tries the client certificate first, then the token; credentials that were
    // presented but match nothing are 401 even where anonymous requests are let through.
    if bearer.is_some() && from_token.is_none() && from_peer.is_none() {
        return ApiError::unauthorized().into_response();
    }
    match from_peer.or(from_token) {
        Some(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None if is_public(request.uri().path()) => next.run(request).await,
        None => ApiError::unauthorized().into_response(),
    }
}

/// The identity in a verified client certificate chain.
pub(crate) fn identity_from_certificate(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    groups.push("system:authenticated".into());
    Some(Identity { user, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_parse_like_upstream() {
        let auth = TokenAuthenticator::from_csv("# comment\nabc,alice,1,\"dev,ops\"\nxyz,bob,2\n")
            .unwrap();
        let alice = auth.lookup("abc").unwrap();
        assert_eq!(alice.user, "alice");
        assert_eq!(alice.groups, vec!["dev", "ops", "system:authenticated"]);
        assert_eq!(
            auth.lookup("xyz").unwrap().groups,
            vec!["system:authenticated"]
        );
        assert!(auth.lookup("nope").is_none());
        assert!(TokenAuthenticator::from_csv("only,two").is_err());
    }
}
