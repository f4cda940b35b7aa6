//! Bootstrap tokens (upstream's bootstrap token authenticator): a bearer token `<id>.<secret>`
//! (6 and 16 characters of `[a-z0-9]`) names the Secret `bootstrap-token-<id>` in kube-system,
//! of type `bootstrap.kubernetes.io/token`. The token is valid while the Secret's secret
//! matches, `usage-bootstrap-authentication` is `true` and `expiration` (RFC 3339) is ahead.
//! The user is `system:bootstrap:<id>`, in `system:bootstrappers` plus the Secret's
//! `auth-extra-groups`.

use base64::Engine;
use serde_json::Value;

use crate::auth::Identity;
use crate::authz::BOOTSTRAPPERS;
use crate::objects::Objects;
use crate::state::AppState;

/// Split a token into (id, secret) if it has the bootstrap token shape.
pub(crate) fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, len: usize| {
        s.len() == len
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// The identity of a valid bootstrap token, or None.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Option<Identity> {
    let (id, secret) = parse(token)?;
    let info = state.registry().get("", "v1", "secrets")?.clone();
    let object = Objects::new(state, &info)
        .get(Some("kube-system"), &format!("bootstrap-token-{id}"))
        .await
        .ok()?;
    identity_from_secret(&object, id, secret, jiff::Timestamp::now())
}

fn identity_from_secret(
    secret_obj: &Value,
    id: &str,
    secret: &str,
    now: jiff::Timestamp,
) -> Option<Identity> {
    if secret_obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
        || secret_obj.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    let field = |key: &str| -> Option<String> {
        let encoded = secret_obj.pointer(&format!("/data/{key}"))?.as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    if field("token-id").as_deref() != Some(id) {
        return None;
    }
    let stored = field("token-secret")?;
    // Compare without an early exit, so timing does not reveal how much of a guess matched.
    let same = stored.len() == secret.len()
        && stored
            .bytes()
            .zip(secret.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same || field("usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        match expiration.parse::<jiff::Timestamp>() {
            Ok(at) if at > now => {}
            _ => return None,
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_owned()];
    for g in field("auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        // Upstream only lets tokens add groups under system:bootstrappers:.
        if g.starts_with("system:bootstrappers:") {
            groups.push(g.to_owned());
        }
    }
    groups.push("system:authenticated".into());
    Some(Identity {
        user: format!("system:bootstrap:{id}"),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn secret(extra: &[(&str, &str)]) -> Value {
        let mut data = serde_json::Map::new();
        for (k, v) in [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-authentication", "true"),
        ]
        .iter()
        .chain(extra)
        {
            data.insert((*k).to_owned(), json!(b64(v)));
        }
        json!({"type": "bootstrap.kubernetes.io/token", "metadata": {"name": "bootstrap-token-abcdef"}, "data": data})
    }

    #[test]
    fn token_shape() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcdef.short"), None);
        assert_eq!(parse("no-dot"), None);
    }

    #[test]
    fn valid_tokens_authenticate_as_bootstrappers() {
        let now = jiff::Timestamp::now();
        let s = secret(&[(
            "auth-extra-groups",
            "system:bootstrappers:skiff:nodes,system:masters",
        )]);
        let id = identity_from_secret(&s, "abcdef", "0123456789abcdef", now).unwrap();
        assert_eq!(id.user, "system:bootstrap:abcdef");
        assert_eq!(
            id.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:skiff:nodes",
                "system:authenticated"
            ]
        );
        assert!(identity_from_secret(&s, "abcdef", "0123456789abcdeX", now).is_none());
    }

    #[test]
    fn expired_or_unusable_tokens_do_not() {
        let now = jiff::Timestamp::now();
        let expired = secret(&[("expiration", "2020-01-01T00:00:00Z")]);
        assert!(identity_from_secret(&expired, "abcdef", "0123456789abcdef", now).is_none());
        let future = secret(&[("expiration", "2999-01-01T00:00:00Z")]);
        assert!(identity_from_secret(&future, "abcdef", "0123456789abcdef", now).is_some());
        let mut wrong_type = secret(&[]);
        wrong_type["type"] = json!("Opaque");
        assert!(identity_from_secret(&wrong_type, "abcdef", "0123456789abcdef", now).is_none());
        let mut no_usage = secret(&[]);
        no_usage["data"]["usage-bootstrap-authentication"] = json!(b64("false"));
        assert!(identity_from_secret(&no_usage, "abcdef", "0123456789abcdef", now).is_none());
    }
}
