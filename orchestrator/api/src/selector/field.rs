//! Field selectors (`?fieldSelector=spec.nodeName=n1,status.phase!=Failed`): parsing, the
//! per-kind list of supported fields, and matching against JSON objects.

use serde_json::Value;

use super::label::SelectorError;

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field path such as `spec.nodeName`.
    pub field: String,
    /// True for `!=`.
    pub negated: bool,
    /// The value compared against.
    pub value: String,
}

/// A conjunction of field requirements.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// Requirements, all of which must hold.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parse `a=b,c!=d` (also `a==b`), honouring `\,`, `\=` and `\\` escapes in values.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in split_unescaped(input, ',') {
            let (field, negated, value) = if let Some(i) = find_unescaped(&term, "!=") {
                (&term[..i], true, &term[i + 2..])
            } else if let Some(i) = find_unescaped(&term, "==") {
                (&term[..i], false, &term[i + 2..])
            } else if let Some(i) = find_unescaped(&term, "=") {
                (&term[..i], false, &term[i + 1..])
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{input}'; can't understand '{term}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_owned(),
                negated,
                value: unescape(value),
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether this selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Check every field is supported for `kind`; the error wording is upstream's.
    pub fn check_supported(&self, kind: &str) -> Result<(), SelectorError> {
        for r in &self.requirements {
            if field_path(kind, &r.field).is_none() {
                return Err(SelectorError(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(())
    }

    /// Whether an object of `kind` satisfies every term. Unsupported fields never match.
    pub fn matches(&self, kind: &str, object: &Value) -> bool {
        self.requirements.iter().all(|r| {
            let Some(path) = field_path(kind, &r.field) else {
                return false;
            };
            let actual = field_value(object, path);
            (actual == r.value) != r.negated
        })
    }

    /// The value a `metadata.name=X` term pins, used to narrow a store range to one key.
    pub fn exact_name(&self) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negated)
            .map(|r| r.value.as_str())
    }
}

/// The JSON path of a selectable field for a kind, `None` when unsupported. Every kind supports
/// `metadata.name` and `metadata.namespace`; the rest follow upstream's field label conversions.
fn field_path(kind: &str, field: &str) -> Option<&'static str> {
    let common = match field {
        "metadata.name" => Some("/metadata/name"),
        "metadata.namespace" => Some("/metadata/namespace"),
        _ => None,
    };
    if common.is_some() {
        return common;
    }
    match (kind, field) {
        ("Pod", "spec.nodeName") => Some("/spec/nodeName"),
        ("Pod", "spec.restartPolicy") => Some("/spec/restartPolicy"),
        ("Pod", "spec.schedulerName") => Some("/spec/schedulerName"),
        ("Pod", "spec.serviceAccountName") => Some("/spec/serviceAccountName"),
        ("Pod", "spec.hostNetwork") => Some("/spec/hostNetwork"),
        ("Pod", "status.phase") => Some("/status/phase"),
        ("Pod", "status.podIP") => Some("/status/podIP"),
        ("Pod", "status.nominatedNodeName") => Some("/status/nominatedNodeName"),
        ("Event", "involvedObject.kind") => Some("/involvedObject/kind"),
        ("Event", "involvedObject.namespace") => Some("/involvedObject/namespace"),
        ("Event", "involvedObject.name") => Some("/involvedObject/name"),
        ("Event", "involvedObject.uid") => Some("/involvedObject/uid"),
        ("Event", "involvedObject.apiVersion") => Some("/involvedObject/apiVersion"),
        ("Event", "involvedObject.resourceVersion") => Some("/involvedObject/resourceVersion"),
        ("Event", "involvedObject.fieldPath") => Some("/involvedObject/fieldPath"),
        ("Event", "reason") => Some("/reason"),
        ("Event", "reportingComponent") => Some("/reportingComponent"),
        ("Event", "source") => Some("/source/component"),
        ("Event", "type") => Some("/type"),
        ("Node", "spec.unschedulable") => Some("/spec/unschedulable"),
        ("Namespace", "status.phase") => Some("/status/phase"),
        ("Secret", "type") => Some("/type"),
        ("ReplicaSet", "status.replicas") => Some("/status/replicas"),
        ("Job", "status.successful") => Some("/status/succeeded"),
        ("PersistentVolumeClaim", "spec.volumeName") => Some("/spec/volumeName"),
        _ => None,
    }
}

/// A field's value as the selector compares it: strings as-is, booleans and numbers as
/// text, missing as the type's zero value (upstream compares Go zero values).
fn field_value(object: &Value, path: &str) -> String {
    match object.pointer(path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ if path == "/spec/unschedulable" || path == "/spec/hostNetwork" => "false".into(),
        _ if path == "/status/replicas" || path == "/status/succeeded" => "0".into(),
        _ => String::new(),
    }
}

fn split_unescaped(input: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in input.chars() {
        if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

fn find_unescaped(term: &str, token: &str) -> Option<usize> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if term[i..].starts_with(token) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_matches() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let check = |sel: &str, expected: bool| {
            let s = FieldSelector::parse(sel).unwrap();
            s.check_supported("Pod").unwrap();
            assert_eq!(s.matches("Pod", &pod), expected, "{sel}");
        };
        check("metadata.name=p", true);
        check("metadata.name==q", false);
        check(
            "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
            true,
        );
        check("spec.nodeName=", false);
        check("status.phase!=Running", false);
    }

    #[test]
    fn unsupported_fields_are_rejected() {
        let s = FieldSelector::parse("spec.foo=bar").unwrap();
        assert_eq!(
            s.check_supported("Pod").unwrap_err().0,
            "field label not supported: spec.foo"
        );
        assert!(FieldSelector::parse("novalue").is_err());
    }

    #[test]
    fn events_by_involved_object_and_escapes() {
        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "a,b", "kind": "Pod", "uid": ""}});
        let s = FieldSelector::parse(r"involvedObject.name=a\,b,involvedObject.uid=").unwrap();
        assert!(s.matches("Event", &ev));
        let node = json!({"metadata": {"name": "n"}, "spec": {}});
        assert!(
            FieldSelector::parse("spec.unschedulable=false")
                .unwrap()
                .matches("Node", &node)
        );
    }
}
