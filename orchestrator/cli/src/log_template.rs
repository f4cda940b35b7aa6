//! `skiff logs --template`: stern's Go templates over each line, run by gtmpl (Go's
//! text/template for Rust). The data are stern's names — `.Message`, `.Namespace`,
//! `.PodName`, `.ContainerName`, `.NodeName`, `.Labels`, `.Timestamp` — plus `.PodColor` and
//! `.ContainerColor` for the `color` helper; `json` and `parseJSON` convert. As in stern the
//! output is printed as is: end the template with `{{"\n"}}` for one line per line.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use gtmpl::{Context, Func, FuncError, Template, Value};
use gtmpl_value::Number;

/// A parsed `--template`.
pub(crate) struct LineTemplate(Template);

/// One line's data.
pub(crate) struct LineData<'a> {
    pub message: &'a str,
    pub labels: &'a serde_json::Value,
    pub timestamp: String,
    /// ANSI colour codes, empty when not colouring.
    pub pod_color: &'a str,
    pub container_color: &'a str,
}

impl LineTemplate {
    pub(crate) fn parse(text: &str) -> Result<LineTemplate> {
        // gtmpl's lexer never returns from an action left open at the end ("{{ .PodName ").
        if text
            .rfind("{{")
            .is_some_and(|open| !text[open..].contains("}}"))
        {
            return Err(anyhow!("--template {text:?}: the last {{{{ is not closed"));
        }
        let mut t = Template::default();
        t.add_funcs(&[
            ("color", color as Func),
            ("json", json as Func),
            ("parseJSON", parse_json as Func),
        ]);
        t.parse(text)
            .map_err(|e| anyhow!("--template {text:?}: {e}"))?;
        Ok(LineTemplate(t))
    }

    pub(crate) fn render(&self, line: &LineData) -> Result<String> {
        let label = |k: &str| line.labels[k].as_str().unwrap_or("").to_owned();
        let mut data: HashMap<String, Value> = HashMap::new();
        data.insert("Message".into(), line.message.into());
        data.insert("Namespace".into(), label("namespace").into());
        data.insert("PodName".into(), label("pod").into());
        data.insert("ContainerName".into(), label("container").into());
        data.insert("NodeName".into(), label("node").into());
        data.insert("Labels".into(), from_json(line.labels));
        data.insert("Timestamp".into(), line.timestamp.clone().into());
        data.insert("PodColor".into(), line.pod_color.into());
        data.insert("ContainerColor".into(), line.container_color.into());
        self.0
            .render(&Context::from(Value::Object(data)))
            .map_err(|e| anyhow!("--template: {e}"))
    }
}

fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Number(Number::from(i)),
            (None, Some(f)) => Value::Number(Number::from(f)),
            _ => Value::Nil,
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => serde_json::from_str(&n.to_string()).unwrap_or_default(),
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Object(o) | Value::Map(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// `{{color .PodColor .PodName}}`: the text in that colour (as is when not colouring).
fn color(args: &[Value]) -> Result<Value, FuncError> {
    let [code, text] = args else {
        return Err(FuncError::ExactlyXArgs("color".into(), 2));
    };
    let text = text.to_string();
    Ok(match code {
        Value::String(c) if !c.is_empty() => format!("\x1b[{c}m{text}\x1b[0m"),
        _ => text,
    }
    .into())
}

/// `{{json .Labels}}`: a value as JSON text.
fn json(args: &[Value]) -> Result<Value, FuncError> {
    let [v] = args else {
        return Err(FuncError::ExactlyXArgs("json".into(), 1));
    };
    Ok(to_json(v).to_string().into())
}

/// `{{with parseJSON .Message}}{{.level}}{{end}}`: a JSON line as a value to index into.
fn parse_json(args: &[Value]) -> Result<Value, FuncError> {
    let [v] = args else {
        return Err(FuncError::ExactlyXArgs("parseJSON".into(), 1));
    };
    let parsed: serde_json::Value = serde_json::from_str(&v.to_string())
        .map_err(|e| FuncError::Generic(format!("parseJSON: {e}")))?;
    Ok(from_json(&parsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, color: &str) -> String {
        let labels = serde_json::json!({
            "namespace": "shop", "pod": "web-1", "container": "app", "node": "n1", "tier": "front",
        });
        LineTemplate::parse(template)
            .unwrap()
            .render(&LineData {
                message: r#"{"level":"warn","msg":"slow"}"#,
                labels: &labels,
                timestamp: "2026-11-26T00:00:00Z".into(),
                pod_color: color,
                container_color: "",
            })
            .unwrap()
    }

    #[test]
    fn stern_templates_render() {
        assert_eq!(
            render(
                r#"{{.Namespace}}/{{.PodName}}/{{.ContainerName}}@{{.NodeName}} {{.Message}}{{"\n"}}"#,
                ""
            ),
            "shop/web-1/app@n1 {\"level\":\"warn\",\"msg\":\"slow\"}\n"
        );
        assert_eq!(
            render(r#"{{printf "%s %s" .Timestamp .PodName}}"#, ""),
            "2026-11-26T00:00:00Z web-1"
        );
        assert_eq!(
            render("{{color .PodColor .PodName}} {{.Labels.tier}}", "31"),
            "\x1b[31mweb-1\x1b[0m front"
        );
        assert_eq!(render("{{color .PodColor .PodName}}", ""), "web-1");
        assert_eq!(
            render("{{with parseJSON .Message}}{{.level}}: {{.msg}}{{end}}", ""),
            "warn: slow"
        );
        let labels: serde_json::Value =
            serde_json::from_str(&render("{{json .Labels}}", "")).unwrap();
        assert_eq!(labels["tier"], "front");
    }

    #[test]
    fn bad_templates_say_why() {
        for open in ["{{.PodName", "{{ .PodName ", "{{.Message}} {{ printf "] {
            let err = LineTemplate::parse(open).err().unwrap().to_string();
            assert!(err.contains("--template"), "{err}");
        }
        let labels = serde_json::json!({});
        let err = LineTemplate::parse("{{parseJSON .Message}}")
            .unwrap()
            .render(&LineData {
                message: "not json",
                labels: &labels,
                timestamp: String::new(),
                pod_color: "",
                container_color: "",
            })
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("parseJSON"), "{err}");
    }
}
