//! Label selectors: the string syntax of `?labelSelector=` and `kubectl -l`, and the structured
//! `metav1.LabelSelector` of workload specs, both reduced to one [`LabelSelector`] that matches
//! label maps.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::validation::names::{is_qualified_name, is_valid_label_value};

/// A parse or validation error in a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `k=v`, `k==v`, `k in (v1,v2)`.
    In,
    /// `k!=v`, `k notin (v1,v2)`.
    NotIn,
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>5`.
    Gt,
    /// `k<5`.
    Lt,
}

/// One requirement such as `app in (web,api)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// Operator.
    pub op: Operator,
    /// Values (one for `=`/`!=`/`>`/`<`, several for `in`/`notin`, none for existence).
    pub values: Vec<String>,
    /// Whether the requirement was written with `=`/`==`/`!=` rather than `in`/`notin`.
    equality: bool,
}

/// A conjunction of requirements. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Requirements, all of which must hold.
    pub requirements: Vec<Requirement>,
    /// A structured selector with `matchLabels: null`-style "nothing" semantics.
    nothing: bool,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.op {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::Gt | Operator::Lt => {
                let (Some(v), Some(bound)) = (value, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else {
                    return false;
                };
                if self.op == Operator::Gt {
                    v > bound
                } else {
                    v < bound
                }
            }
        }
    }
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let joined = self.values.join(",");
        match self.op {
            Operator::In if self.equality => write!(f, "{}={}", self.key, joined),
            Operator::NotIn if self.equality => write!(f, "{}!={}", self.key, joined),
            Operator::In => write!(f, "{} in ({})", self.key, joined),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, joined),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Gt => write!(f, "{}>{}", self.key, joined),
            Operator::Lt => write!(f, "{}<{}", self.key, joined),
        }
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(|r| r.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl LabelSelector {
    /// The selector matching everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Whether this selector matches every object.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    /// Whether a label map satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches_object(&self, object: &Value) -> bool {
        self.matches(&labels_of(object))
    }

    /// Parse the string form (`app=web,tier in (fe,be),!canary`). `+` must already be decoded
    /// to a space by the query-string decoder.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(input)? {
            let part = part.trim();
            if part.is_empty() {
                if input.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError(
                    "unable to parse requirement: found ',', expected: identifier".into(),
                ));
            }
            requirements.push(parse_requirement(part)?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Convert a structured `metav1.LabelSelector` (`matchLabels`, `matchExpressions`). A
    /// missing selector (JSON null) selects nothing; an empty one selects everything, as
    /// upstream's `LabelSelectorAsSelector`.
    pub fn from_structured(selector: &Value) -> Result<Self, SelectorError> {
        if selector.is_null() {
            return Ok(LabelSelector {
                requirements: Vec::new(),
                nothing: true,
            });
        }
        let mut requirements = Vec::new();
        if let Some(map) = selector.get("matchLabels").and_then(Value::as_object) {
            for (key, value) in map {
                let value = value.as_str().unwrap_or_default().to_owned();
                check_key(key)?;
                check_value(&value)?;
                requirements.push(Requirement {
                    key: key.clone(),
                    op: Operator::In,
                    values: vec![value],
                    equality: true,
                });
            }
        }
        if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
            for expr in exprs {
                let key = expr.get("key").and_then(Value::as_str).unwrap_or_default();
                check_key(key)?;
                let values: Vec<String> = expr
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match expr.get("operator").and_then(Value::as_str) {
                    Some("In") => Operator::In,
                    Some("NotIn") => Operator::NotIn,
                    Some("Exists") => Operator::Exists,
                    Some("DoesNotExist") => Operator::DoesNotExist,
                    other => {
                        return Err(SelectorError(format!(
                            "{:?} is not a valid label selector operator",
                            other.unwrap_or_default()
                        )));
                    }
                };
                match op {
                    Operator::In | Operator::NotIn if values.is_empty() => {
                        return Err(SelectorError(
                            "for 'in', 'notin' operators, values set can't be empty".into(),
                        ));
                    }
                    Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                        return Err(SelectorError(
                            "values set must be empty for exists and does not exist".into(),
                        ));
                    }
                    _ => {}
                }
                for v in &values {
                    check_value(v)?;
                }
                requirements.push(Requirement {
                    key: key.to_owned(),
                    op,
                    values,
                    equality: false,
                });
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }
}

/// Render a structured selector the way `kubectl get -o wide` and `Scale.status.selector` show
/// it (`app=web,tier in (fe)`), `<none>` when empty.
pub fn format_structured(selector: &Value) -> String {
    match LabelSelector::from_structured(selector) {
        Ok(s) if s.is_empty() => "<none>".into(),
        Ok(s) if s.nothing => "<none>".into(),
        Ok(s) => s.to_string(),
        Err(_) => "<error>".into(),
    }
}

/// `metadata.labels` of an object as a map.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    if let Err(msg) = is_qualified_name(key) {
        return Err(SelectorError(format!(
            "unable to parse requirement: invalid label key \"{key}\": {msg}"
        )));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if let Err(msg) = is_valid_label_value(value) {
        return Err(SelectorError(format!(
            "unable to parse requirement: invalid label value: \"{value}\": at key: {msg}"
        )));
    }
    Ok(())
}

/// Split on commas that are not inside parentheses.
fn split_top_level(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(
                        "unable to parse requirement: found ')', expected: identifier".into(),
                    ));
                }
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(
            "unable to parse requirement: found '', expected: ')'".into(),
        ));
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement {
            key: key.to_owned(),
            op: Operator::DoesNotExist,
            values: Vec::new(),
            equality: false,
        });
    }
    // Set-based: `key in (a,b)` / `key notin (a,b)`.
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let rest = words[1].trim_start();
        for (word, op) in [("notin", Operator::NotIn), ("in", Operator::In)] {
            if let Some(list) = rest.strip_prefix(word) {
                let list = list.trim();
                let inner = list
                    .strip_prefix('(')
                    .and_then(|l| l.strip_suffix(')'))
                    .ok_or_else(|| {
                        SelectorError(format!(
                            "unable to parse requirement: found '{list}', expected: '('"
                        ))
                    })?;
                let key = words[0];
                check_key(key)?;
                let values: Vec<String> = inner
                    .split(',')
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty() || inner.trim().is_empty())
                    .collect();
                for v in &values {
                    check_value(v)?;
                }
                return Ok(Requirement {
                    key: key.to_owned(),
                    op,
                    values,
                    equality: false,
                });
            }
        }
    }
    for (token, op) in [
        ("==", Operator::In),
        ("!=", Operator::NotIn),
        ("=", Operator::In),
        (">", Operator::Gt),
        ("<", Operator::Lt),
    ] {
        if let Some((key, value)) = part.split_once(token) {
            let (key, value) = (key.trim(), value.trim());
            check_key(key)?;
            if matches!(op, Operator::Gt | Operator::Lt) {
                if value.parse::<i64>().is_err() {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                    )));
                }
            } else {
                check_value(value)?;
            }
            return Ok(Requirement {
                key: key.to_owned(),
                op,
                values: vec![value.to_owned()],
                equality: matches!(op, Operator::In | Operator::NotIn),
            });
        }
    }
    if part.contains(char::is_whitespace) {
        return Err(SelectorError(format!(
            "unable to parse requirement: found '{}', expected: in, notin, =, ==, !=, gt, lt",
            part.split_whitespace().nth(1).unwrap_or_default()
        )));
    }
    check_key(part)?;
    Ok(Requirement {
        key: part.to_owned(),
        op: Operator::Exists,
        values: Vec::new(),
        equality: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(selector: &str, pairs: &[(&str, &str)], expected: bool) {
        let s = LabelSelector::parse(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
        assert_eq!(
            s.matches(&labels(pairs)),
            expected,
            "{selector} on {pairs:?}"
        );
    }

    #[test]
    fn equality_and_set_based() {
        check("", &[("a", "b")], true);
        check("app=web", &[("app", "web")], true);
        check("app==web", &[("app", "api")], false);
        check("app!=web", &[], true);
        check("app in (web,api)", &[("app", "api")], true);
        check("app in (web, api)", &[("app", "db")], false);
        check("app notin (web)", &[("app", "db")], true);
        check("app notin (web)", &[], true);
        check("app", &[("app", "")], true);
        check("!app", &[("app", "x")], false);
        check(
            "app=web,tier in (fe)",
            &[("app", "web"), ("tier", "fe")],
            true,
        );
        check(
            "app=web,tier in (fe)",
            &[("app", "web"), ("tier", "be")],
            false,
        );
        check("n>3", &[("n", "4")], true);
        check("n<3", &[("n", "4")], false);
        check("example.com/app=x", &[("example.com/app", "x")], true);
    }

    #[test]
    fn bad_syntax_is_an_error() {
        for bad in [
            "app in web",
            "app in (web",
            "a b",
            "app=we b",
            "-bad=x",
            "app=",
            ",",
            "x>y",
        ] {
            if bad == "app=" {
                // An empty value is a valid label value.
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn structured_selectors() {
        let s = LabelSelector::from_structured(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("canary", "1")])));
        assert_eq!(s.to_string(), "app=web,!canary,tier in (fe,be)");
        assert!(
            !LabelSelector::from_structured(&Value::Null)
                .unwrap()
                .matches(&labels(&[]))
        );
        assert!(
            LabelSelector::from_structured(&json!({}))
                .unwrap()
                .matches(&labels(&[]))
        );
        assert_eq!(
            format_structured(&json!({"matchLabels": {"app": "web"}})),
            "app=web"
        );
        assert_eq!(format_structured(&json!({})), "<none>");
    }

    #[test]
    fn display_round_trips() {
        for s in ["app=web", "app!=web", "app in (a,b)", "!x", "x", "n>3"] {
            assert_eq!(LabelSelector::parse(s).unwrap().to_string(), s);
        }
    }
}
