//! Printing: aligned tables (from server-side Tables), YAML, JSON, names and jsonpath.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::api::Resource;
use crate::jsonpath;

/// `-o` formats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Format {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
    JsonPath(String),
}

impl Format {
    pub(crate) fn parse(s: Option<&str>) -> Result<Self> {
        Ok(match s {
            None | Some("") => Format::Table,
            Some("wide") => Format::Wide,
            Some("yaml") => Format::Yaml,
            Some("json") => Format::Json,
            Some("name") => Format::Name,
            Some(other) => match other.split_once('=') {
                Some(("jsonpath", t)) => Format::JsonPath(t.to_owned()),
                _ => bail!(
                    "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,jsonpath,name,wide,yaml"
                ),
            },
        })
    }

    pub(crate) fn is_table(&self) -> bool {
        matches!(self, Format::Table | Format::Wide)
    }
}

/// Print rows left-aligned with three spaces between columns, as kubectl's tabwriter does.
pub(crate) fn print_rows(rows: &[Vec<String>]) {
    print!("{}", format_rows(rows));
}

pub(crate) fn format_rows(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How to turn a server Table into rows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TableOptions {
    pub(crate) wide: bool,
    pub(crate) namespace_column: bool,
    pub(crate) show_labels: bool,
    pub(crate) headers: bool,
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Rows of a Table (header first when asked for).
pub(crate) fn table_rows(table: &Value, opts: TableOptions) -> Vec<Vec<String>> {
    let columns: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| opts.wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or_default().to_uppercase()))
        .collect();
    let mut rows = Vec::new();
    if opts.headers {
        let mut header = Vec::new();
        if opts.namespace_column {
            header.push("NAMESPACE".to_owned());
        }
        header.extend(columns.iter().map(|(_, n)| n.clone()));
        if opts.show_labels {
            header.push("LABELS".to_owned());
        }
        rows.push(header);
    }
    for row in table["rows"].as_array().into_iter().flatten() {
        let cells = row["cells"].as_array().cloned().unwrap_or_default();
        let mut out = Vec::new();
        if opts.namespace_column {
            out.push(
                row["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        out.extend(
            columns
                .iter()
                .map(|(i, _)| cells.get(*i).map(cell_text).unwrap_or_default()),
        );
        if opts.show_labels {
            out.push(labels_text(&row["object"]["metadata"]["labels"]));
        }
        rows.push(out);
    }
    rows
}

fn labels_text(labels: &Value) -> String {
    let mut pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// Print objects in a non-table format. One object prints as itself; several (or a list
/// request) print as a `v1 List`, as kubectl does.
pub(crate) fn print_objects(
    format: &Format,
    resource: &Resource,
    objects: &[Value],
    as_list: bool,
) -> Result<()> {
    let doc = if as_list || objects.len() != 1 {
        json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}})
    } else {
        objects[0].clone()
    };
    match format {
        Format::Yaml => print!("{}", serde_norway::to_string(&doc)?),
        Format::Json => println!("{}", pretty_json(&doc)),
        Format::Name => {
            for o in objects {
                println!(
                    "{}/{}",
                    resource.kind_ref(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                );
            }
        }
        Format::JsonPath(t) => print!("{}", jsonpath::render(t, &doc)?),
        Format::Table | Format::Wide => unreachable!("tables print from server Tables"),
    }
    Ok(())
}

/// JSON with kubectl's four-space indentation.
pub(crate) fn pretty_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    serde::Serialize::serialize(v, &mut ser).expect("JSON values serialize");
    String::from_utf8(buf).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_hide_wide_columns() {
        let table = json!({"columnDefinitions": [
            {"name": "Name", "priority": 0}, {"name": "Ready", "priority": 0}, {"name": "IP", "priority": 1}],
            "rows": [{"cells": ["web-1", "1/1", "10.0.0.1"], "object": {"metadata": {"namespace": "default", "labels": {"app": "web"}}}},
                     {"cells": ["db", "0/1", null], "object": {"metadata": {"namespace": "data"}}}]});
        let rows = table_rows(
            &table,
            TableOptions {
                headers: true,
                namespace_column: true,
                ..Default::default()
            },
        );
        assert_eq!(
            format_rows(&rows),
            "NAMESPACE   NAME    READY\ndefault     web-1   1/1\ndata        db      0/1\n"
        );
        let wide = table_rows(
            &table,
            TableOptions {
                headers: true,
                wide: true,
                show_labels: true,
                ..Default::default()
            },
        );
        assert_eq!(wide[0], vec!["NAME", "READY", "IP", "LABELS"]);
        assert_eq!(wide[2], vec!["db", "0/1", "<none>", "<none>"]);
    }
}
