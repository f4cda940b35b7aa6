//! Reading manifests: multi-document YAML or JSON, with errors that name the document and line.

use serde::Deserialize;
use serde_json::Value;

/// A manifest that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ManifestError {
    /// Where the text came from (a file name or `STDIN`).
    pub source_name: String,
    /// What is wrong, with the line when known.
    pub message: String,
}

/// Parse every document in `text` (YAML with `---` separators, or JSON). Empty documents and
/// `List` kinds are flattened away, as kubectl does.
pub fn parse_documents(source_name: &str, text: &str) -> Result<Vec<Value>, ManifestError> {
    let mut out = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("error converting YAML to JSON: yaml: line {}: ", l.line()))
                .unwrap_or_else(|| "error converting YAML to JSON: ".into());
            ManifestError {
                source_name: source_name.to_owned(),
                message: format!("{at}{e}"),
            }
        })?;
        match value {
            Value::Null => {}
            Value::Object(_) => {
                if value
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && let Some(items) = value.get("items").and_then(Value::as_array)
                {
                    out.extend(items.iter().cloned());
                } else {
                    out.push(value);
                }
            }
            other => {
                return Err(ManifestError {
                    source_name: source_name.to_owned(),
                    message: format!(
                        "error validating data: expected a mapping at the top level, found {}",
                        type_name(&other)
                    ),
                });
            }
        }
    }
    for (i, doc) in out.iter().enumerate() {
        for field in ["apiVersion", "kind"] {
            if doc
                .get(field)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ManifestError {
                    source_name: source_name.to_owned(),
                    message: format!(
                        "error validating data: [{field} not set]; document {}",
                        i + 1
                    ),
                });
            }
        }
    }
    Ok(out)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a sequence",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml() {
        let docs = parse_documents(
            "x.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["kind"], "Secret");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_documents(
            "bad.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: [\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bad.yaml: error converting YAML to JSON: yaml: line"),
            "{err}"
        );
        let err = parse_documents("nokind.yaml", "apiVersion: v1\nmetadata: {}\n").unwrap_err();
        assert!(err.message.contains("kind not set"), "{err}");
    }
}
