//! `skiff logs` (stern's multi-pod tail on top of the log search service) and `skiff search`
//! (log search and its histogram). Both reach skiff-search through the API server's service
//! proxy (`kube-system/skiff-search`), so they need nothing but the kubeconfig and work from
//! wherever the API server is reachable, with the cluster's authentication.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use anyhow::{Result, anyhow, bail};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use serde_json::Value;

use crate::api::ProxiedError;
use crate::context::Ctx;
use crate::log_template::{LineData, LineTemplate};

/// Where the search service is, through the API server.
const SEARCH: &str = "/api/v1/namespaces/kube-system/services/skiff-search:http/proxy";

/// The most lines one answer carries (skiff-search's limit).
const MAX_LINES: i64 = 5000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `<pod> <container> <line>`, coloured per pod on a terminal.
    Default,
    /// The line only.
    Raw,
    /// One JSON object per line.
    Json,
}

/// `skiff logs`.
#[derive(Args, Debug)]
pub(crate) struct LogsArgs {
    /// Pods to show: a regular expression over pod names (as stern takes), or TYPE/NAME
    /// (pod/NAME, deploy/NAME, rs/NAME, ds/NAME, sts/NAME, job/NAME).
    target: Option<String>,
    /// Pod label selector (`app=web,tier!=cache,env in (a,b)`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Containers to show: a regular expression over container names.
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep following new lines (of pods that appear later too).
    #[arg(short = 'f', long)]
    follow: bool,
    /// Lines newer than this (5s, 2m, 3h).
    #[arg(long, default_value = "48h")]
    since: String,
    /// The last N lines (-1: all, up to 5000).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only lines containing this text.
    #[arg(long)]
    grep: Option<String>,
    /// Only lines matching this regular expression (repeatable: all must match).
    #[arg(short = 'i', long)]
    include: Vec<String>,
    /// Leave out lines matching this regular expression (repeatable).
    #[arg(short = 'e', long)]
    exclude: Vec<String>,
    /// Print each line's time.
    #[arg(short = 't', long)]
    timestamps: bool,
    #[arg(short = 'o', long, value_enum, default_value = "default")]
    output: LogFormat,
    /// A Go template per line instead of -o, as stern's: `.Message`, `.Namespace`,
    /// `.PodName`, `.ContainerName`, `.NodeName`, `.Labels`, `.Timestamp`, `.PodColor`,
    /// `.ContainerColor`; `color`, `json`, `parseJSON`. Printed as is: end it with {{"\n"}}.
    #[arg(long)]
    template: Option<String>,
    /// Colour pod and container names: auto (on a terminal), always or never.
    #[arg(long, value_enum, default_value = "auto")]
    color: ColorMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorMode {
    Auto,
    Always,
    Never,
}

/// A LogQL string literal.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A pod label selector as LogQL matchers on pod labels.
fn selector_matchers(selector: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    for part in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let m = if let Some((k, v)) = part.split_once("!=") {
            format!("{}!={}", quote(k.trim()), quote(v.trim()))
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            format!("{}={}", quote(k.trim()), quote(v.trim()))
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            format!("{}!~{}", quote(k.trim()), quote(&set_regex(rest)?))
        } else if let Some((k, rest)) = part.split_once(" in ") {
            format!("{}=~{}", quote(k.trim()), quote(&set_regex(rest)?))
        } else if let Some(k) = part.strip_prefix('!') {
            format!("{}=\"\"", quote(k.trim()))
        } else {
            format!("{}=~\".+\"", quote(part))
        };
        out.push(m);
    }
    Ok(out)
}

/// `(a, b)` → `a|b`, escaped.
fn set_regex(set: &str) -> Result<String> {
    let inner = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| anyhow!("label selector set {set:?}: expected (a, b)"))?;
    Ok(inner
        .split(',')
        .map(|v| regex_escape(v.trim()))
        .collect::<Vec<_>>()
        .join("|"))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The LogQL query `skiff logs` asks.
async fn logs_query(ctx: &Ctx, a: &LogsArgs) -> Result<String> {
    let mut matchers = Vec::new();
    if !a.all_namespaces {
        matchers.push(format!("namespace={}", quote(&ctx.namespace)));
    }
    if let Some(target) = &a.target {
        match target.split_once('/') {
            Some((kind, name)) => {
                let (owner_kind, owner) = match kind {
                    "pod" | "pods" | "po" => {
                        matchers.push(format!("pod={}", quote(name)));
                        (None, String::new())
                    }
                    "deploy" | "deployment" | "deployments" => (
                        Some("ReplicaSet"),
                        format!("{}-[a-z0-9]+", regex_escape(name)),
                    ),
                    "rs" | "replicaset" | "replicasets" => (Some("ReplicaSet"), regex_escape(name)),
                    "ds" | "daemonset" | "daemonsets" => (Some("DaemonSet"), regex_escape(name)),
                    "sts" | "statefulset" | "statefulsets" => {
                        (Some("StatefulSet"), regex_escape(name))
                    }
                    "job" | "jobs" => (Some("Job"), regex_escape(name)),
                    other => bail!(
                        "cannot show logs of {other}: use pod/, deploy/, rs/, ds/, sts/ or job/"
                    ),
                };
                if let Some(kind) = owner_kind {
                    matchers.push(format!("owner_kind={}", quote(kind)));
                    matchers.push(format!("owner_name=~{}", quote(&owner)));
                }
            }
            None => matchers.push(format!("pod=~{}", quote(&format!(".*(?:{target}).*")))),
        }
    }
    if let Some(sel) = &a.selector {
        matchers.extend(selector_matchers(sel)?);
    }
    if let Some(c) = &a.container {
        matchers.push(format!("container=~{}", quote(&format!(".*(?:{c}).*"))));
    }
    if matchers.is_empty() {
        matchers.push("namespace=~\".+\"".into());
    }
    let mut q = format!("{{{}}}", matchers.join(", "));
    if let Some(g) = &a.grep {
        q.push_str(&format!(" |= {}", quote(g)));
    }
    for re in &a.include {
        q.push_str(&format!(" |~ {}", quote(re)));
    }
    for re in &a.exclude {
        q.push_str(&format!(" !~ {}", quote(re)));
    }
    Ok(q)
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

fn since_ns(since: &str) -> Result<i64> {
    let d: jiff::SignedDuration = since
        .parse()
        .map_err(|e| anyhow!("--since {since:?}: {e} (use e.g. 30s, 15m, 2h)"))?;
    Ok(now_ns() - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX / 2))
}

fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Say plainly when the search service is not there.
fn search_error(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<ProxiedError>() {
        Some(p) if p.status == 503 || (p.status == 404 && p.body.contains("skiff-search")) => {
            anyhow!(
                "the log search service is not reachable ({p}); is the cluster running the log pipeline (skiffd up)?"
            )
        }
        _ => e,
    }
}

/// One line to print.
struct Line {
    ts: i64,
    labels: Value,
    line: String,
}

/// Prints lines the way `-o` (or `--template`) says, one colour per pod on a terminal.
struct Printer {
    format: LogFormat,
    template: Option<LineTemplate>,
    timestamps: bool,
    color: bool,
    colors: HashMap<String, usize>,
}

const COLORS: [&str; 6] = ["31", "32", "33", "34", "35", "36"];

impl Printer {
    fn new(
        format: LogFormat,
        timestamps: bool,
        template: Option<LineTemplate>,
        color: ColorMode,
    ) -> Printer {
        Printer {
            format,
            template,
            timestamps,
            color: match color {
                ColorMode::Auto => std::io::stdout().is_terminal(),
                ColorMode::Always => true,
                ColorMode::Never => false,
            },
            colors: HashMap::new(),
        }
    }

    fn print(&mut self, out: &mut impl Write, l: &Line) -> Result<()> {
        let time = || {
            jiff::Timestamp::from_nanosecond(i128::from(l.ts))
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        if self.template.is_some() {
            let pod_color = match self.color {
                true => self.pod_color(&l.labels),
                false => "",
            };
            let t = self.template.as_ref().expect("checked above");
            let text = t.render(&LineData {
                message: &l.line,
                labels: &l.labels,
                timestamp: time(),
                pod_color,
                container_color: if self.color { "2" } else { "" },
            })?;
            out.write_all(text.as_bytes())?;
            return Ok(());
        }
        match self.format {
            LogFormat::Json => {
                let mut v = serde_json::json!({"time": time(), "message": l.line});
                if let Some(obj) = l.labels.as_object() {
                    for (k, x) in obj {
                        v[k] = x.clone();
                    }
                }
                writeln!(out, "{v}")?;
            }
            LogFormat::Raw => {
                if self.timestamps {
                    write!(out, "{} ", time())?;
                }
                writeln!(out, "{}", l.line)?;
            }
            LogFormat::Default => {
                let label = |k: &str| l.labels[k].as_str().unwrap_or("").to_owned();
                let pod = match label("pod") {
                    p if p.is_empty() => label("component"),
                    p => p,
                };
                let container = label("container");
                if self.timestamps {
                    write!(out, "{} ", time())?;
                }
                if self.color {
                    let c = self.pod_color(&l.labels);
                    writeln!(
                        out,
                        "\x1b[{c}m{pod}\x1b[0m \x1b[2m{container}\x1b[0m {}",
                        l.line
                    )?;
                } else {
                    writeln!(out, "{pod} {container} {}", l.line)?;
                }
            }
        }
        Ok(())
    }

    /// The colour of a line's pod (or component): the next one for a pod not seen yet.
    fn pod_color(&mut self, labels: &Value) -> &'static str {
        let pod = match labels["pod"].as_str() {
            Some(p) if !p.is_empty() => p,
            _ => labels["component"].as_str().unwrap_or(""),
        };
        let n = self.colors.len();
        COLORS[*self.colors.entry(pod.to_owned()).or_insert(n) % COLORS.len()]
    }
}

/// Lines of a Loki streams answer, oldest first.
fn stream_lines(v: &Value) -> Vec<Line> {
    let mut out = Vec::new();
    for s in v["data"]["result"].as_array().into_iter().flatten() {
        for e in s["values"].as_array().into_iter().flatten() {
            out.push(Line {
                ts: e[0].as_str().and_then(|t| t.parse().ok()).unwrap_or(0),
                labels: s["stream"].clone(),
                line: e[1].as_str().unwrap_or("").to_owned(),
            });
        }
    }
    out.sort_by_key(|l| l.ts);
    out
}

pub(crate) async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let query = logs_query(ctx, &a).await?;
    let start = since_ns(&a.since)?;
    let limit = if a.tail < 0 {
        MAX_LINES
    } else {
        a.tail.min(MAX_LINES)
    };
    let template = a.template.as_deref().map(LineTemplate::parse).transpose()?;
    let mut printer = Printer::new(a.output, a.timestamps, template, a.color);
    let mut out = std::io::stdout().lock();
    if !a.follow {
        let url = format!(
            "{SEARCH}/loki/api/v1/query_range?{}",
            encode(&[
                ("query", query),
                ("start", start.to_string()),
                ("end", (now_ns() + 1).to_string()),
                ("limit", limit.to_string()),
                ("direction", "backward".into()),
            ])
        );
        let v = ctx.api.proxied_json(&url).await.map_err(search_error)?;
        for l in stream_lines(&v) {
            printer.print(&mut out, &l)?;
        }
        return Ok(());
    }
    drop(out);
    let url = format!(
        "{SEARCH}/api/v1/tail?{}",
        encode(&[
            ("query", query),
            ("start", start.to_string()),
            ("limit", limit.to_string()),
        ])
    );
    let mut lines = Box::pin(
        ctx.api
            .proxied_lines(&url, "text/event-stream")
            .await
            .map_err(search_error)?,
    );
    let mut event = String::new();
    while let Some(line) = lines.next().await {
        let line = line?;
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_owned();
            continue;
        }
        let Some(data) = line.strip_prefix("data:") else {
            if line.is_empty() {
                event.clear();
            }
            continue;
        };
        let v: Value = serde_json::from_str(data.trim())?;
        if event == "dropped" {
            eprintln!(
                "skiff: {} lines were dropped (this terminal reads too slowly)",
                v["dropped"]
            );
            continue;
        }
        let l = Line {
            ts: v["ts"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0),
            labels: v["labels"].clone(),
            line: v["line"].as_str().unwrap_or("").to_owned(),
        };
        let mut out = std::io::stdout().lock();
        printer.print(&mut out, &l)?;
        out.flush()?;
    }
    Ok(())
}

/// `skiff search`.
#[derive(Args, Debug)]
pub(crate) struct SearchArgs {
    /// What to look for: words, "a phrase", AND/OR/NOT, field:value (Lucene-style); or a LogQL
    /// log query such as '{app="web"} |= "timeout"'. Empty: every line.
    query: Option<String>,
    /// Pod label selector (`app=web,tier=front`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Search every namespace (default: the current one).
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    #[arg(long)]
    pod: Option<String>,
    #[arg(long)]
    container: Option<String>,
    #[arg(long)]
    node: Option<String>,
    /// Only lines of this level (error, warn, info, debug).
    #[arg(long)]
    level: Option<String>,
    /// A Skiff component's own logs (apiserver, scheduler, controller-manager, agent, search).
    #[arg(long)]
    component: Option<String>,
    /// Lines newer than this.
    #[arg(long, default_value = "1h")]
    since: String,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Oldest first (default: newest first).
    #[arg(long)]
    oldest: bool,
    /// Count matching lines over time instead of listing them.
    #[arg(long)]
    histogram: bool,
    /// The histogram's bucket width (default: about 60 buckets).
    #[arg(long)]
    interval: Option<String>,
    /// With --histogram: split the counts by this label (level, pod, namespace, …).
    #[arg(long)]
    split: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "default")]
    output: LogFormat,
}

pub(crate) async fn search(ctx: &Ctx, a: SearchArgs) -> Result<()> {
    let text = a.query.clone().unwrap_or_default();
    if text.trim_start().starts_with('{') {
        if a.histogram {
            bail!(
                "--histogram takes query text; for LogQL use count_over_time through the Loki API"
            );
        }
        let order = if a.oldest { "forward" } else { "backward" };
        let url = format!(
            "{SEARCH}/loki/api/v1/query_range?{}",
            encode(&[
                ("query", text),
                ("start", since_ns(&a.since)?.to_string()),
                ("end", (now_ns() + 1).to_string()),
                ("limit", a.limit.to_string()),
                ("direction", order.into()),
            ])
        );
        let v = ctx.api.proxied_json(&url).await.map_err(search_error)?;
        let mut printer = Printer::new(a.output, true, None, ColorMode::Auto);
        let mut out = std::io::stdout().lock();
        for l in stream_lines(&v) {
            printer.print(&mut out, &l)?;
        }
        return Ok(());
    }
    let mut params: Vec<(&str, String)> = vec![("query", text), ("since", a.since.clone())];
    if !a.all_namespaces && a.component.is_none() {
        params.push(("namespace", ctx.namespace.clone()));
    }
    for (k, v) in [
        ("pod", &a.pod),
        ("container", &a.container),
        ("node", &a.node),
        ("level", &a.level),
        ("component", &a.component),
    ] {
        if let Some(v) = v {
            params.push((k, v.clone()));
        }
    }
    if let Some(sel) = &a.selector {
        for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if !part.contains('=') {
                bail!("-l {part:?}: skiff search takes key=value and key!=value");
            }
            params.push(("label", part.replace("==", "=")));
        }
    }
    if a.histogram {
        if let Some(i) = &a.interval {
            params.push(("interval", i.clone()));
        }
        if let Some(s) = &a.split {
            params.push(("split", s.clone()));
        }
        let url = format!("{SEARCH}/api/v1/histogram?{}", encode(&params));
        let v = ctx.api.proxied_json(&url).await.map_err(search_error)?;
        return print_histogram(&v, a.output);
    }
    params.push(("limit", a.limit.to_string()));
    if a.oldest {
        params.push(("order", "asc".into()));
    }
    let url = format!("{SEARCH}/api/v1/search?{}", encode(&params));
    let v = ctx.api.proxied_json(&url).await.map_err(search_error)?;
    let hits = v["hits"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match a.output {
        LogFormat::Json => {
            for h in &hits {
                writeln!(out, "{h}")?;
            }
        }
        LogFormat::Raw => {
            for h in &hits {
                writeln!(out, "{}", h["message"].as_str().unwrap_or(""))?;
            }
        }
        LogFormat::Default => {
            for h in &hits {
                let s = |k: &str| h[k].as_str().unwrap_or("").to_owned();
                let source = if s("pod").is_empty() {
                    s("component")
                } else {
                    format!("{}/{} {}", s("namespace"), s("pod"), s("container"))
                };
                let level = match s("level") {
                    l if l.is_empty() => "-".to_owned(),
                    l => l,
                };
                writeln!(out, "{} {source} {level} {}", s("time"), s("message"))?;
            }
            drop(out);
            let at_least = if v["total_relation"] == "gte" {
                "≥ "
            } else {
                ""
            };
            eprintln!("{} of {at_least}{} matching lines", hits.len(), v["total"]);
        }
    }
    Ok(())
}

fn print_histogram(v: &Value, format: LogFormat) -> Result<()> {
    let buckets = v["buckets"].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if format == LogFormat::Json {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let max = buckets
        .iter()
        .filter_map(|b| b["count"].as_u64())
        .max()
        .unwrap_or(0)
        .max(1);
    let width = 50;
    for b in &buckets {
        let n = b["count"].as_u64().unwrap_or(0);
        let bar = "█".repeat(((n * width) / max) as usize);
        let mut line = format!("{} {n:>8} {bar}", b["time"].as_str().unwrap_or(""));
        if let Some(by) = b["by"].as_object().filter(|o| !o.is_empty()) {
            let parts: Vec<String> = by.iter().map(|(k, c)| format!("{k}={c}")).collect();
            line.push_str(&format!("  {}", parts.join(" ")));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_become_matchers() {
        assert_eq!(
            selector_matchers("app=web, tier!=cache,env in (a, b.c),!gone,has").unwrap(),
            vec![
                r#""app"="web""#,
                r#""tier"!="cache""#,
                r#""env"=~"a|b\\.c""#,
                r#""gone"="""#,
                r#""has"=~".+""#,
            ]
        );
        assert!(selector_matchers("x in a").is_err());
    }
}
