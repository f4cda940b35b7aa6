//! `skiff get` (server-side Tables, `-o yaml|json|wide|name|jsonpath`, selectors, `-A`, `-w`)
//! and `skiff api-resources`.

use anyhow::Result;
use clap::Args;
use futures::StreamExt;
use serde_json::Value;

use crate::api::Resource;
use crate::context::Ctx;
use crate::output::{Format, TableOptions, format_rows, print_objects, print_rows, table_rows};

/// Flags of `skiff get`.
#[derive(Args, Debug)]
pub(crate) struct GetArgs {
    /// TYPE [NAME…], TYPE/NAME…, or TYPE1,TYPE2 (`all` for the common workload types).
    #[arg(required = true)]
    targets: Vec<String>,
    /// Output format: wide, yaml, json, name, jsonpath=TEMPLATE.
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// Label selector (`app=web`, `tier in (fe,be)`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector (`status.phase=Running`).
    #[arg(long)]
    field_selector: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// After listing, watch for changes.
    #[arg(short = 'w', long)]
    watch: bool,
    /// Show labels as the last column.
    #[arg(long)]
    show_labels: bool,
    /// Omit the header row.
    #[arg(long)]
    no_headers: bool,
}

/// Split `get` targets into resources with optional names.
pub(crate) async fn resolve_targets(
    ctx: &Ctx,
    targets: &[String],
) -> Result<Vec<(Resource, Vec<String>)>> {
    let mut out: Vec<(Resource, Vec<String>)> = Vec::new();
    if targets[0].contains('/') {
        for t in targets {
            let (ty, name) = t.split_once('/').ok_or_else(|| anyhow::anyhow!("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'skiff get resource/<resource_name>' instead of 'skiff get resource resource/<resource_name>'"))?;
            let r = ctx.api.resolve(ty).await?;
            match out
                .iter_mut()
                .find(|(x, _)| x.plural == r.plural && x.group == r.group)
            {
                Some((_, names)) => names.push(name.to_owned()),
                None => out.push((r, vec![name.to_owned()])),
            }
        }
        return Ok(out);
    }
    let names: Vec<String> = targets[1..].to_vec();
    for ty in targets[0].split(',') {
        if ty == "all" {
            for r in ctx.api.category("all").await? {
                out.push((r, names.clone()));
            }
        } else {
            out.push((ctx.api.resolve(ty).await?, names.clone()));
        }
    }
    Ok(out)
}

fn query(args: &GetArgs, extra: &[(&str, String)]) -> String {
    let mut q = form_query(args.selector.as_deref(), args.field_selector.as_deref());
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    q.finish()
}

/// A query string builder with label and field selectors.
pub(crate) fn form_query(
    selector: Option<&str>,
    fields: Option<&str>,
) -> form_urlencoded::Serializer<'static, String> {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = selector {
        q.append_pair("labelSelector", s);
    }
    if let Some(f) = fields {
        q.append_pair("fieldSelector", f);
    }
    q
}

pub(crate) async fn run(ctx: &Ctx, args: GetArgs) -> Result<()> {
    let format = Format::parse(args.output.as_deref())?;
    let targets = resolve_targets(ctx, &args.targets).await?;
    let multiple = targets.len() > 1;
    let ns = (!args.all_namespaces).then_some(ctx.namespace.as_str());
    let mut printed_any = false;
    let mut collected: Vec<(Resource, Vec<Value>)> = Vec::new();
    for (resource, names) in &targets {
        if format.is_table() {
            let mut tables = Vec::new();
            if names.is_empty() {
                let url = format!(
                    "{}?{}",
                    resource.url(ns, None),
                    query(&args, &[("limit", "500".into())])
                );
                tables.push(ctx.api.get_table(&url).await?);
            } else {
                for n in names {
                    tables.push(
                        ctx.api
                            .get_table(&resource.url(Some(&ctx.namespace), Some(n)))
                            .await?,
                    );
                }
            }
            let opts = TableOptions {
                wide: format == Format::Wide,
                namespace_column: args.all_namespaces && resource.namespaced,
                show_labels: args.show_labels,
                headers: !args.no_headers,
            };
            let mut rows = Vec::new();
            for (i, t) in tables.iter().enumerate() {
                let mut these = table_rows(
                    t,
                    TableOptions {
                        headers: opts.headers && i == 0,
                        ..opts
                    },
                );
                if multiple {
                    prefix_names(&mut these, resource, opts);
                }
                rows.extend(these);
            }
            let data_rows = rows.len() - usize::from(opts.headers);
            if data_rows > 0 {
                if printed_any {
                    println!();
                }
                print_rows(&rows);
                printed_any = true;
            }
            if args.watch {
                let rv = tables
                    .first()
                    .and_then(|t| t["metadata"]["resourceVersion"].as_str())
                    .unwrap_or("0")
                    .to_owned();
                return watch(ctx, &args, resource, ns, &rv, opts, data_rows == 0).await;
            }
        } else {
            let mut objects = Vec::new();
            if names.is_empty() {
                let url = format!("{}?{}", resource.url(ns, None), query(&args, &[]));
                let list = ctx.api.get_json(&url).await?;
                for mut item in list["items"].as_array().cloned().unwrap_or_default() {
                    item["apiVersion"] = Value::from(resource.api_version());
                    item["kind"] = Value::from(resource.kind.clone());
                    objects.push(item);
                }
            } else {
                for n in names {
                    objects.push(
                        ctx.api
                            .get_json(&resource.url(Some(&ctx.namespace), Some(n)))
                            .await?,
                    );
                }
            }
            collected.push((resource.clone(), objects));
        }
    }
    if !format.is_table() {
        let as_list = targets.iter().any(|(_, names)| names.is_empty()) || multiple;
        let all: Vec<Value> = collected
            .iter()
            .flat_map(|(_, o)| o.iter().cloned())
            .collect();
        if format == Format::Name {
            for (r, objects) in &collected {
                print_objects(&format, r, objects, true)?;
            }
        } else {
            let first = &targets[0].0;
            print_objects(&format, first, &all, as_list)?;
        }
        printed_any = !all.is_empty();
    }
    if !printed_any && format.is_table() {
        if args.all_namespaces || !targets.iter().any(|(r, _)| r.namespaced) {
            eprintln!("No resources found");
        } else {
            eprintln!("No resources found in {} namespace.", ctx.namespace);
        }
    }
    Ok(())
}

fn prefix_names(rows: &mut [Vec<String>], resource: &Resource, opts: TableOptions) {
    let name_col = usize::from(opts.namespace_column);
    for (i, row) in rows.iter_mut().enumerate() {
        if opts.headers && i == 0 {
            continue;
        }
        if let Some(cell) = row.get_mut(name_col) {
            *cell = format!("{}/{cell}", resource.kind_ref());
        }
    }
}

async fn watch(
    ctx: &Ctx,
    args: &GetArgs,
    resource: &Resource,
    ns: Option<&str>,
    rv: &str,
    opts: TableOptions,
    need_header: bool,
) -> Result<()> {
    let url = format!(
        "{}?{}",
        resource.url(ns, None),
        query(
            args,
            &[("watch", "true".into()), ("resourceVersion", rv.to_owned())]
        )
    );
    let mut events = Box::pin(ctx.api.watch(&url, true).await?);
    let mut header_pending = need_header && opts.headers;
    while let Some(event) = events.next().await {
        let event = event?;
        if event["type"] == "ERROR" {
            anyhow::bail!(
                "{}",
                event["object"]["message"].as_str().unwrap_or("watch error")
            );
        }
        if event["type"] == "BOOKMARK" {
            continue;
        }
        let rows = table_rows(
            &event["object"],
            TableOptions {
                headers: header_pending,
                ..opts
            },
        );
        header_pending = false;
        print!("{}", format_rows(&rows));
        use std::io::Write;
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// Flags of `skiff api-resources`.
#[derive(Args, Debug)]
pub(crate) struct ApiResourcesArgs {
    /// Only namespaced (true) or cluster-scoped (false) resources.
    #[arg(long)]
    namespaced: Option<bool>,
    /// Only this API group ("" for core).
    #[arg(long)]
    api_group: Option<String>,
    /// `name` prints only resource names; `wide` adds verbs.
    #[arg(short = 'o', long)]
    output: Option<String>,
}

pub(crate) async fn api_resources(ctx: &Ctx, args: ApiResourcesArgs) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut resources: Vec<&Resource> = ctx
        .api
        .resources()
        .await?
        .iter()
        .filter(|r| seen.insert((r.group.clone(), r.plural.clone())))
        .filter(|r| args.namespaced.is_none_or(|n| n == r.namespaced))
        .filter(|r| args.api_group.as_deref().is_none_or(|g| g == r.group))
        .collect();
    resources.sort_by(|a, b| {
        (!a.group.is_empty(), &a.group, &a.plural).cmp(&(!b.group.is_empty(), &b.group, &b.plural))
    });
    if args.output.as_deref() == Some("name") {
        for r in resources {
            println!(
                "{}",
                if r.group.is_empty() {
                    r.plural.clone()
                } else {
                    format!("{}.{}", r.plural, r.group)
                }
            );
        }
        return Ok(());
    }
    let wide = args.output.as_deref() == Some("wide");
    let mut header = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
        .map(String::from)
        .to_vec();
    if wide {
        header.push("VERBS".into());
    }
    let mut rows = vec![header];
    for r in resources {
        let mut row = vec![
            r.plural.clone(),
            r.short_names.join(","),
            r.api_version(),
            r.namespaced.to_string(),
            r.kind.clone(),
        ];
        if wide {
            row.push(format!("[{}]", r.verbs.join(" ")));
        }
        rows.push(row);
    }
    print_rows(&rows);
    Ok(())
}
