//! `skiff top nodes|pods`: CPU and memory from the Metrics API (`metrics.k8s.io`), as `kubectl
//! top` prints them; with `--watch` (or `--count N`) it samples again every `--interval` and adds a
//! sparkline of each row's CPU over the samples taken so far.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::Value;
use skiff_api::quantity::Quantity;

use crate::context::Ctx;
use crate::output::format_rows;

/// Flags of `skiff top`.
#[derive(Args, Debug)]
pub(crate) struct TopArgs {
    /// `nodes` (`node`, `no`) or `pods` (`pod`, `po`).
    what: String,
    /// One node or pod.
    name: Option<String>,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector (`app=web`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// One row per container.
    #[arg(long)]
    containers: bool,
    /// Keep sampling and redraw, with a CPU sparkline per row.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Time between samples.
    #[arg(long, default_value = "15s", value_parser = parse_interval)]
    interval: Duration,
    /// Stop after this many samples (implies sampling repeatedly).
    #[arg(long)]
    count: Option<usize>,
}

fn parse_interval(s: &str) -> std::result::Result<Duration, String> {
    let (n, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 15s"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?} is not a duration like 15s")),
    };
    Ok(Duration::from_secs_f64(seconds.max(0.1)))
}

fn milli(q: &Value) -> i64 {
    q.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map_or(0, |q| q.milli())
}

fn bytes(q: &Value) -> i64 {
    q.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map_or(0, |q| q.value())
}

/// `▁▂▃▄▅▆▇█` scaled to the row's own maximum.
pub(crate) fn sparkline(values: &VecDeque<i64>) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values
        .iter()
        .map(|v| BARS[((v * 7 + max / 2) / max).clamp(0, 7) as usize])
        .collect()
}

const HISTORY: usize = 30;

/// One table: header and rows keyed for the history (key, cells, CPU milli).
type Sample = (Vec<String>, Vec<(String, Vec<String>, i64)>);

async fn nodes(ctx: &Ctx, args: &TopArgs) -> Result<Sample> {
    let mut url = "/apis/metrics.k8s.io/v1beta1/nodes".to_owned();
    if let Some(name) = &args.name {
        url = format!("{url}/{name}");
    } else if let Some(sel) = &args.selector {
        url = format!("{url}?labelSelector={}", urlencode(sel));
    }
    let metrics = ctx.api.get_json(&url).await?;
    let items: Vec<Value> = match metrics["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![metrics],
    };
    let nodes = ctx.api.get_json("/api/v1/nodes").await?;
    let allocatable: HashMap<String, (i64, i64)> = nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let a = &n["status"]["allocatable"];
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                (milli(&a["cpu"]), bytes(&a["memory"])),
            )
        })
        .collect();
    let header = ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"];
    let mut rows = Vec::new();
    for m in &items {
        let name = m["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (cpu, mem) = (milli(&m["usage"]["cpu"]), bytes(&m["usage"]["memory"]));
        let (acpu, amem) = allocatable.get(&name).copied().unwrap_or((0, 0));
        let pct = |v: i64, of: i64| {
            if of > 0 {
                format!("{}%", v * 100 / of)
            } else {
                "<unknown>".into()
            }
        };
        rows.push((
            name.clone(),
            vec![
                name,
                format!("{cpu}m"),
                pct(cpu, acpu),
                format!("{}Mi", mem >> 20),
                pct(mem, amem),
            ],
            cpu,
        ));
    }
    Ok((header.iter().map(|s| (*s).to_owned()).collect(), rows))
}

async fn pods(ctx: &Ctx, args: &TopArgs) -> Result<Sample> {
    let base = "/apis/metrics.k8s.io/v1beta1";
    let mut url = if args.all_namespaces {
        format!("{base}/pods")
    } else {
        format!("{base}/namespaces/{}/pods", ctx.namespace)
    };
    if let Some(name) = &args.name {
        url = format!("{base}/namespaces/{}/pods/{name}", ctx.namespace);
    } else if let Some(sel) = &args.selector {
        url = format!("{url}?labelSelector={}", urlencode(sel));
    }
    let metrics = ctx.api.get_json(&url).await?;
    let items: Vec<Value> = match metrics["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![metrics],
    };
    let mut header: Vec<String> = Vec::new();
    if args.all_namespaces {
        header.push("NAMESPACE".into());
    }
    header.push(if args.containers { "POD" } else { "NAME" }.into());
    if args.containers {
        header.push("NAME".into());
    }
    header.extend(["CPU(cores)".to_owned(), "MEMORY(bytes)".to_owned()]);
    let mut rows = Vec::new();
    for m in &items {
        let ns = m["metadata"]["namespace"].as_str().unwrap_or_default();
        let pod = m["metadata"]["name"].as_str().unwrap_or_default();
        let containers = m["containers"].as_array().cloned().unwrap_or_default();
        let mut emit = |container: Option<&str>, cpu: i64, mem: i64| {
            let mut cells = Vec::new();
            if args.all_namespaces {
                cells.push(ns.to_owned());
            }
            cells.push(pod.to_owned());
            if let Some(c) = container {
                cells.push(c.to_owned());
            }
            cells.extend([format!("{cpu}m"), format!("{}Mi", mem >> 20)]);
            let key = format!("{ns}/{pod}/{}", container.unwrap_or_default());
            rows.push((key, cells, cpu));
        };
        if args.containers {
            for c in &containers {
                emit(
                    c["name"].as_str(),
                    milli(&c["usage"]["cpu"]),
                    bytes(&c["usage"]["memory"]),
                );
            }
        } else {
            let cpu = containers.iter().map(|c| milli(&c["usage"]["cpu"])).sum();
            let mem = containers
                .iter()
                .map(|c| bytes(&c["usage"]["memory"]))
                .sum();
            emit(None, cpu, mem);
        }
    }
    Ok((header, rows))
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) async fn run(ctx: &Ctx, args: TopArgs) -> Result<()> {
    let nodes_wanted = match args.what.as_str() {
        "nodes" | "node" | "no" => true,
        "pods" | "pod" | "po" => false,
        other => bail!("unknown resource {other:?}: use nodes or pods"),
    };
    let repeat = args.watch || args.count.is_some();
    let tty = std::io::stdout().is_terminal();
    let mut history: BTreeMap<String, VecDeque<i64>> = BTreeMap::new();
    let mut taken = 0usize;
    loop {
        let (mut header, rows) = if nodes_wanted {
            nodes(ctx, &args).await?
        } else {
            pods(ctx, &args).await?
        };
        taken += 1;
        if rows.is_empty() && !repeat {
            match args.all_namespaces || nodes_wanted {
                true => println!("No resources found"),
                false => println!("No resources found in {} namespace.", ctx.namespace),
            }
            return Ok(());
        }
        let mut table = Vec::new();
        if repeat {
            header.push("CPU HISTORY".into());
        }
        table.push(header);
        for (key, mut cells, cpu) in rows {
            if repeat {
                let h = history.entry(key).or_default();
                h.push_back(cpu);
                while h.len() > HISTORY {
                    h.pop_front();
                }
                cells.push(sparkline(h));
            }
            table.push(cells);
        }
        if repeat && tty {
            // Redraw in place on a terminal.
            print!("\x1b[2J\x1b[H");
        }
        print!("{}", format_rows(&table));
        if !repeat || args.count.is_some_and(|n| taken >= n) {
            return Ok(());
        }
        if !tty {
            println!();
        }
        tokio::time::sleep(args.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_row() {
        let v: VecDeque<i64> = [0, 50, 100, 25].into_iter().collect();
        assert_eq!(sparkline(&v), "▁▅█▃");
        let flat: VecDeque<i64> = [0, 0].into_iter().collect();
        assert_eq!(sparkline(&flat), "▁▁");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_interval("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_interval("soon").is_err());
    }
}
