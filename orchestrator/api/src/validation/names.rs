//! Name syntax checks with upstream's error messages (apimachinery `validation.IsDNS1123Label`
//! and friends). Each returns `Err(message)` in the words kubectl users see.

use std::sync::LazyLock;

use regex::Regex;

static DNS1123_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").unwrap());
static DNS1123_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").unwrap()
});
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").unwrap());
static LABEL_VALUE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").unwrap());

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters (namespaces, services, containers).
pub fn is_dns1123_label(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !DNS1123_LABEL.is_match(value) {
        return Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into());
    }
    Ok(())
}

/// Dot-separated DNS-1123 labels, at most 253 characters (most object names).
pub fn is_dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if !DNS1123_SUBDOMAIN.is_match(value) {
        return Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into());
    }
    Ok(())
}

/// A label or annotation key: optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters.
pub fn is_qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".into());
        }
        if let Err(msg) = is_dns1123_subdomain(prefix) {
            return Err(format!("prefix part {msg}"));
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".into());
    }
    if !QUALIFIED_NAME.is_match(name) {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    Ok(())
}

/// A label value: empty, or at most 63 alphanumerics with `-_.` inside.
pub fn is_valid_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    if !LABEL_VALUE.is_match(value) {
        return Err("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into());
    }
    Ok(())
}

/// The name check a kind uses: DNS-1123 labels for namespaces and services, path segment
/// rules for RBAC objects, DNS-1123 subdomains for everything else.
pub fn check_object_name(kind: &str, name: &str) -> Result<(), String> {
    match kind {
        "Namespace" | "Service" => is_dns1123_label(name),
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            if name == "." || name == ".." {
                Err(format!("may not be '{name}'"))
            } else if name.contains('/') || name.contains('%') {
                Err("may not contain '/' or '%'".into())
            } else {
                Ok(())
            }
        }
        _ => is_dns1123_subdomain(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(is_dns1123_label("web-1").is_ok());
        assert!(is_dns1123_label("Web").is_err());
        assert!(is_dns1123_label("a.b").is_err());
        assert!(is_dns1123_label(&"a".repeat(64)).is_err());
        assert!(is_dns1123_subdomain("a.b-c").is_ok());
        assert!(is_dns1123_subdomain("-a").is_err());
        assert!(is_dns1123_subdomain("UPPER").is_err());
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(is_qualified_name("app").is_ok());
        assert!(is_qualified_name("app.kubernetes.io/name").is_ok());
        assert!(is_qualified_name("/x").is_err());
        assert!(is_qualified_name("Bad_Prefix/x").is_err());
        assert!(is_qualified_name("x/").is_err());
        assert!(is_valid_label_value("").is_ok());
        assert!(is_valid_label_value("v1.2_3").is_ok());
        assert!(is_valid_label_value("a b").is_err());
    }
}
