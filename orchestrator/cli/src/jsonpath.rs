//! kubectl's `-o jsonpath=` templates: literal text with `{expressions}`: field paths
//! (`.spec.replicas`, `.items[*].metadata.name`, `['a.b']`, `[0]`, `[-1]`, equality filters
//! `[?(@.type=="Ready")]`), string literals (`{"\n"}`), and `{range …}…{end}` loops.

use anyhow::{Result, bail};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter(Vec<Step>, Value),
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Vec<Step>),
    Range(Vec<Step>, Vec<Node>),
}

/// Render `template` against `data`.
pub(crate) fn render(template: &str, data: &Value) -> Result<String> {
    let tokens = tokenize(template)?;
    let (nodes, rest) = parse(&tokens, 0)?;
    if rest != tokens.len() {
        bail!("unexpected {{end}} in jsonpath template");
    }
    let mut out = String::new();
    eval(&nodes, data, &mut out);
    Ok(out)
}

#[derive(Debug)]
enum Token {
    Text(String),
    Expr(String),
}

fn tokenize(template: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        if start > 0 {
            tokens.push(Token::Text(rest[..start].to_owned()));
        }
        let end = matching_brace(&rest[start..])
            .ok_or_else(|| anyhow::anyhow!("unclosed action in template {template:?}"))?;
        tokens.push(Token::Expr(rest[start + 1..start + end].trim().to_owned()));
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        tokens.push(Token::Text(rest.to_owned()));
    }
    Ok(tokens)
}

fn matching_brace(s: &str) -> Option<usize> {
    let mut in_quote = None;
    for (i, c) in s.char_indices().skip(1) {
        match (c, in_quote) {
            ('"' | '\'', None) => in_quote = Some(c),
            (q, Some(open)) if q == open => in_quote = None,
            ('}', None) => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse(tokens: &[Token], mut i: usize) -> Result<(Vec<Node>, usize)> {
    let mut nodes = Vec::new();
    while i < tokens.len() {
        match &tokens[i] {
            Token::Text(t) => nodes.push(Node::Text(t.clone())),
            Token::Expr(e) if e == "end" => return Ok((nodes, i)),
            Token::Expr(e) => {
                if let Some(path) = e.strip_prefix("range ") {
                    let (body, end) = parse(tokens, i + 1)?;
                    if end >= tokens.len() {
                        bail!("range without end in jsonpath template");
                    }
                    nodes.push(Node::Range(parse_path(path.trim())?, body));
                    i = end;
                } else if let Some(lit) = string_literal(e) {
                    nodes.push(Node::Text(lit));
                } else {
                    nodes.push(Node::Path(parse_path(e)?));
                }
            }
        }
        i += 1;
    }
    Ok((nodes, i))
}

fn string_literal(e: &str) -> Option<String> {
    let inner = e.strip_prefix('"')?.strip_suffix('"')?;
    Some(
        inner
            .replace("\\n", "\n")
            .replace("\\t", "\t")
            .replace("\\\"", "\""),
    )
}

fn parse_path(expr: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let s = expr.trim_start_matches('$').trim_start_matches('@');
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                i = start;
                while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                if !name.is_empty() {
                    steps.push(if name == "*" {
                        Step::All
                    } else {
                        Step::Field(name)
                    });
                }
            }
            '[' => {
                let close = chars[i..].iter().position(|c| *c == ']').map(|p| p + i);
                let Some(close) = close else {
                    bail!("unterminated [ in jsonpath {expr:?}")
                };
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
                    let (lhs, rhs) = f
                        .split_once("==")
                        .ok_or_else(|| anyhow::anyhow!("unsupported filter {f:?}"))?;
                    let rhs = rhs.trim().trim_matches(|c| c == '"' || c == '\'');
                    let value = rhs
                        .parse::<i64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| Value::from(rhs));
                    steps.push(Step::Filter(parse_path(lhs.trim())?, value));
                } else if let Ok(n) = inner.parse::<i64>() {
                    steps.push(Step::Index(n));
                } else {
                    steps.push(Step::Field(
                        inner.trim_matches(|c| c == '\'' || c == '"').to_owned(),
                    ));
                }
                i = close + 1;
            }
            c => bail!("unexpected {c:?} in jsonpath {expr:?}"),
        }
    }
    Ok(steps)
}

fn select<'a>(values: Vec<&'a Value>, steps: &[Step]) -> Vec<&'a Value> {
    let mut current = values;
    for step in steps {
        let mut next = Vec::new();
        for v in current {
            match step {
                Step::Field(f) => next.extend(v.get(f)),
                Step::Index(n) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *n < 0 { a.len() as i64 + n } else { *n };
                        next.extend(usize::try_from(idx).ok().and_then(|i| a.get(i)));
                    }
                }
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(path, want) => {
                    for item in v.as_array().into_iter().flatten() {
                        if select(vec![item], path)
                            .first()
                            .is_some_and(|got| *got == want)
                        {
                            next.push(item);
                        }
                    }
                }
            }
        }
        current = next;
    }
    current
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn eval(nodes: &[Node], data: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => {
                let values: Vec<String> = select(vec![data], p).into_iter().map(text_of).collect();
                out.push_str(&values.join(" "));
            }
            Node::Range(p, body) => {
                for item in select(vec![data], p) {
                    eval(body, item, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kubectl_templates() {
        let list = json!({"items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "x"}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}]});
        assert_eq!(render("{.items[*].metadata.name}", &list).unwrap(), "a b");
        assert_eq!(
            render(
                "{.items[0].metadata.labels['app.kubernetes.io/name']}",
                &list
            )
            .unwrap(),
            "x"
        );
        assert_eq!(
            render("{range .items[*]}{.metadata.name}{\"\\n\"}{end}", &list).unwrap(),
            "a\nb\n"
        );
        assert_eq!(render("{.items[-1].metadata.name}", &list).unwrap(), "b");
        assert_eq!(
            render(
                "{.items[*].status.conditions[?(@.type==\"Ready\")].status}",
                &list
            )
            .unwrap(),
            "True False"
        );
        assert_eq!(
            render("n={.spec.replicas}", &json!({"spec": {"replicas": 3}})).unwrap(),
            "n=3"
        );
        assert_eq!(
            render("{.data}", &json!({"data": {"a": "1"}})).unwrap(),
            r#"{"a":"1"}"#
        );
        assert!(render("{.a", &json!({})).is_err());
    }
}
