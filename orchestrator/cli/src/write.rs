//! Commands that change objects: apply, create, replace, delete, patch, scale, label, annotate.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use http::Method;
use serde_json::{Value, json};
use skiff_api::three_way::{last_applied, three_way_patch, with_last_applied};

use crate::api::{Resource, is_not_found};
use crate::context::Ctx;
use crate::get::{form_query, resolve_targets};
use crate::manifests::{self, Manifest};

/// Flags of commands that read manifests.
#[derive(Args, Debug)]
pub(crate) struct FileArgs {
    /// Files, directories or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Walk directories recursively.
    #[arg(short = 'R', long)]
    recursive: bool,
    /// `server` sends the request as a dry run.
    #[arg(long, default_value = "none", value_parser = ["none", "server", "client"])]
    dry_run: String,
    /// Server-side apply (apply only).
    #[arg(long)]
    server_side: bool,
    /// Field manager for server-side apply.
    #[arg(long, default_value = "skiff")]
    field_manager: String,
    /// Take ownership of conflicting fields (server-side apply).
    #[arg(long)]
    force_conflicts: bool,
}

struct Target {
    resource: Resource,
    namespace: Option<String>,
    name: String,
}

async fn target_of(ctx: &Ctx, m: &Manifest) -> Result<Target> {
    let api_version = m.object["apiVersion"].as_str().unwrap_or_default();
    let kind = m.object["kind"].as_str().unwrap_or_default();
    let resource = ctx
        .api
        .resolve_kind(api_version, kind)
        .await
        .with_context(|| format!("unable to recognize \"{}\"", m.source))?;
    let namespace = resource.namespaced.then(|| {
        m.object["metadata"]["namespace"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| ctx.namespace.clone())
    });
    let name = m.object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok(Target {
        resource,
        namespace,
        name,
    })
}

fn suffix(dry_run: &str) -> &'static str {
    match dry_run {
        "server" => " (server dry run)",
        "client" => " (dry run)",
        _ => "",
    }
}

fn write_query(dry_run: &str, manager: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("fieldManager", manager);
    if dry_run == "server" {
        q.append_pair("dryRun", "All");
    }
    q.finish()
}

fn with_namespace(mut obj: Value, ns: Option<&str>) -> Value {
    if let Some(ns) = ns {
        obj["metadata"]["namespace"] = json!(ns);
    }
    obj
}

/// `skiff apply -f`.
pub(crate) async fn apply(ctx: &Ctx, args: FileArgs) -> Result<()> {
    for m in manifests::read(&args.files, args.recursive)? {
        let t = target_of(ctx, &m).await?;
        if t.name.is_empty() {
            bail!(
                "error when retrieving current configuration of \"{}\": resource name may not be empty",
                m.source
            );
        }
        let label = format!("{}/{}", t.resource.kind_ref(), t.name);
        let url = t.resource.url(t.namespace.as_deref(), Some(&t.name));
        let dry = suffix(&args.dry_run);
        if args.dry_run == "client" {
            println!("{label} configured{dry}");
            continue;
        }
        if args.server_side {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("fieldManager", &args.field_manager)
                .append_pair("force", &args.force_conflicts.to_string());
            if args.dry_run == "server" {
                q.append_pair("dryRun", "All");
            }
            let body = with_namespace(m.object.clone(), t.namespace.as_deref());
            ctx.api
                .write(
                    Method::PATCH,
                    &format!("{url}?{}", q.finish()),
                    "application/apply-patch+yaml",
                    &body,
                )
                .await?;
            println!("{label} serverside-applied{dry}");
            continue;
        }
        let modified = with_last_applied(&with_namespace(m.object.clone(), t.namespace.as_deref()));
        match ctx.api.get_json(&url).await {
            Err(e) if is_not_found(&e) => {
                let collection = t.resource.url(t.namespace.as_deref(), None);
                ctx.api
                    .write(
                        Method::POST,
                        &format!(
                            "{collection}?{}",
                            write_query(&args.dry_run, "kubectl-client-side-apply")
                        ),
                        "application/json",
                        &modified,
                    )
                    .await
                    .with_context(|| format!("error when creating \"{}\"", m.source))?;
                println!("{label} created{dry}");
            }
            Err(e) => return Err(e),
            Ok(current) => {
                let patch = three_way_patch(last_applied(&current).as_ref(), &modified, &current);
                if patch.as_object().is_none_or(|p| p.is_empty()) {
                    println!("{label} unchanged{dry}");
                    continue;
                }
                ctx.api
                    .write(
                        Method::PATCH,
                        &format!(
                            "{url}?{}",
                            write_query(&args.dry_run, "kubectl-client-side-apply")
                        ),
                        "application/strategic-merge-patch+json",
                        &patch,
                    )
                    .await
                    .with_context(|| format!("error when applying patch to \"{}\"", m.source))?;
                println!("{label} configured{dry}");
            }
        }
    }
    Ok(())
}

/// `skiff create -f`.
pub(crate) async fn create(ctx: &Ctx, args: FileArgs) -> Result<()> {
    for m in manifests::read(&args.files, args.recursive)? {
        let t = target_of(ctx, &m).await?;
        let collection = t.resource.url(t.namespace.as_deref(), None);
        let created = ctx
            .api
            .write(
                Method::POST,
                &format!(
                    "{collection}?{}",
                    write_query(&args.dry_run, "kubectl-create")
                ),
                "application/json",
                &with_namespace(m.object, t.namespace.as_deref()),
            )
            .await
            .map_err(|e| annotate(e, "creating", &m.source))?;
        let name = created["metadata"]["name"].as_str().unwrap_or(&t.name);
        println!(
            "{}/{name} created{}",
            t.resource.kind_ref(),
            suffix(&args.dry_run)
        );
    }
    Ok(())
}

/// `skiff replace -f`.
pub(crate) async fn replace(ctx: &Ctx, args: FileArgs) -> Result<()> {
    for m in manifests::read(&args.files, args.recursive)? {
        let t = target_of(ctx, &m).await?;
        let url = t.resource.url(t.namespace.as_deref(), Some(&t.name));
        ctx.api
            .write(
                Method::PUT,
                &format!("{url}?{}", write_query(&args.dry_run, "kubectl-replace")),
                "application/json",
                &with_namespace(m.object, t.namespace.as_deref()),
            )
            .await
            .map_err(|e| annotate(e, "replacing", &m.source))?;
        println!(
            "{}/{} replaced{}",
            t.resource.kind_ref(),
            t.name,
            suffix(&args.dry_run)
        );
    }
    Ok(())
}

/// Prefix a server error with the file it came from, as kubectl does.
fn annotate(e: anyhow::Error, verb: &str, source: &str) -> anyhow::Error {
    match e.downcast::<crate::api::ServerError>() {
        Ok(mut s) => {
            s.message = format!("error when {verb} \"{source}\": {}", s.message);
            anyhow!(s)
        }
        Err(e) => e,
    }
}

/// Flags of `skiff delete`.
#[derive(Args, Debug)]
pub(crate) struct DeleteArgs {
    /// TYPE NAME…, or TYPE/NAME….
    targets: Vec<String>,
    /// Delete what these manifests describe.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Delete everything matching this label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Delete every object of the type in the namespace.
    #[arg(long)]
    all: bool,
    /// background, foreground or orphan.
    #[arg(long, default_value = "background", value_parser = ["background", "foreground", "orphan", "true", "false"])]
    cascade: String,
    /// Seconds the object gets to terminate gracefully.
    #[arg(long)]
    grace_period: Option<i64>,
    /// Delete immediately (grace period 0).
    #[arg(long)]
    force: bool,
    /// Wait until the objects are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
}

pub(crate) async fn delete(ctx: &Ctx, args: DeleteArgs) -> Result<()> {
    let policy = match args.cascade.as_str() {
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        _ => "Background",
    };
    let mut body = json!({"propagationPolicy": policy});
    if let Some(g) = args.grace_period {
        body["gracePeriodSeconds"] = json!(g);
    }
    if args.force {
        body["gracePeriodSeconds"] = json!(0);
    }
    let mut victims: Vec<(Resource, Option<String>, String)> = Vec::new();
    if !args.files.is_empty() {
        for m in manifests::read(&args.files, false)? {
            let t = target_of(ctx, &m).await?;
            victims.push((t.resource, t.namespace, t.name));
        }
    } else {
        if args.targets.is_empty() {
            bail!("You must provide one or more resources by argument or filename.");
        }
        for (resource, names) in resolve_targets(ctx, &args.targets).await? {
            let ns = resource.namespaced.then(|| ctx.namespace.clone());
            if names.is_empty() {
                if args.selector.is_none() && !args.all {
                    bail!("resource(s) were provided, but no name was specified");
                }
                let url = format!(
                    "{}?{}",
                    resource.url(ns.as_deref(), None),
                    form_query(args.selector.as_deref(), None).finish()
                );
                let list = ctx.api.get_json(&url).await?;
                for item in list["items"].as_array().into_iter().flatten() {
                    victims.push((
                        resource.clone(),
                        ns.clone(),
                        item["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ));
                }
            } else {
                for n in names {
                    victims.push((resource.clone(), ns.clone(), n));
                }
            }
        }
        if victims.is_empty() {
            eprintln!("No resources found");
            return Ok(());
        }
    }
    let mut failed = None;
    for (resource, ns, name) in &victims {
        let url = resource.url(ns.as_deref(), Some(name));
        match ctx
            .api
            .write(Method::DELETE, &url, "application/json", &body)
            .await
        {
            Ok(_) => println!("{} \"{name}\" deleted", resource.kind_ref()),
            Err(e) => {
                eprintln!("{}", crate::api::render_error(&e));
                failed = Some(e);
            }
        }
    }
    if args.wait {
        for (resource, ns, name) in &victims {
            let url = resource.url(ns.as_deref(), Some(name));
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while std::time::Instant::now() < deadline {
                match ctx.api.get_json(&url).await {
                    Err(e) if is_not_found(&e) => break,
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
    }
    match failed {
        Some(e) => {
            Err(anyhow!("{}", crate::api::render_error(&e)).context("some deletions failed"))
        }
        None => Ok(()),
    }
}

/// Flags of `skiff patch`.
#[derive(Args, Debug)]
pub(crate) struct PatchArgs {
    /// TYPE NAME or TYPE/NAME.
    #[arg(required = true)]
    targets: Vec<String>,
    /// The patch (JSON or YAML).
    #[arg(short = 'p', long)]
    patch: String,
    /// strategic, merge or json.
    #[arg(long = "type", default_value = "strategic", value_parser = ["strategic", "merge", "json"])]
    patch_type: String,
    /// Patch a subresource (status, scale).
    #[arg(long)]
    subresource: Option<String>,
}

pub(crate) async fn patch(ctx: &Ctx, args: PatchArgs) -> Result<()> {
    let content_type = match args.patch_type.as_str() {
        "merge" => "application/merge-patch+json",
        "json" => "application/json-patch+json",
        _ => "application/strategic-merge-patch+json",
    };
    let body: Value = serde_norway::from_str(&args.patch).context("unable to parse the patch")?;
    for (resource, names) in resolve_targets(ctx, &args.targets).await? {
        for name in names {
            let mut url = resource.url(
                resource.namespaced.then_some(ctx.namespace.as_str()),
                Some(&name),
            );
            if let Some(sub) = &args.subresource {
                url = format!("{url}/{sub}");
            }
            let before = ctx.api.get_json(&url).await?;
            let after = ctx
                .api
                .write(
                    Method::PATCH,
                    &format!("{url}?fieldManager=kubectl-patch"),
                    content_type,
                    &body,
                )
                .await?;
            let changed =
                before["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"];
            println!(
                "{}/{name} patched{}",
                resource.kind_ref(),
                if changed { "" } else { " (no change)" }
            );
        }
    }
    Ok(())
}

/// Flags of `skiff scale`.
#[derive(Args, Debug)]
pub(crate) struct ScaleArgs {
    /// TYPE NAME or TYPE/NAME.
    #[arg(required = true)]
    targets: Vec<String>,
    /// New replica count.
    #[arg(long)]
    replicas: i64,
    /// Only scale if the current count is this.
    #[arg(long)]
    current_replicas: Option<i64>,
}

pub(crate) async fn scale(ctx: &Ctx, args: ScaleArgs) -> Result<()> {
    for (resource, names) in resolve_targets(ctx, &args.targets).await? {
        for name in names {
            let url = format!(
                "{}/scale",
                resource.url(
                    resource.namespaced.then_some(ctx.namespace.as_str()),
                    Some(&name)
                )
            );
            if let Some(expected) = args.current_replicas {
                let scale = ctx.api.get_json(&url).await?;
                let actual = scale["spec"]["replicas"].as_i64().unwrap_or(0);
                if actual != expected {
                    bail!("Expected replicas to be {expected}, was {actual}");
                }
            }
            ctx.api
                .write(
                    Method::PATCH,
                    &format!("{url}?fieldManager=kubectl-scale"),
                    "application/merge-patch+json",
                    &json!({"spec": {"replicas": args.replicas}}),
                )
                .await?;
            println!("{}/{name} scaled", resource.kind_ref());
        }
    }
    Ok(())
}

/// Flags of `skiff label` / `skiff annotate`.
#[derive(Args, Debug)]
pub(crate) struct MetaArgs {
    /// TYPE NAME KEY=VALUE… KEY-… (or TYPE/NAME KEY=VALUE…).
    #[arg(required = true)]
    args: Vec<String>,
    /// Replace existing values.
    #[arg(long)]
    overwrite: bool,
}

pub(crate) async fn meta(ctx: &Ctx, args: MetaArgs, field: &str) -> Result<()> {
    let changes: Vec<&String> = args
        .args
        .iter()
        .filter(|a| a.contains('=') || a.ends_with('-'))
        .collect();
    let targets: Vec<String> = args
        .args
        .iter()
        .filter(|a| !a.contains('=') && !a.ends_with('-'))
        .cloned()
        .collect();
    if targets.is_empty() || changes.is_empty() {
        bail!(
            "one or more resources must be specified as <resource> <name> or <resource>/<name>, followed by KEY=VALUE or KEY-"
        );
    }
    let verb = if field == "labels" {
        "labeled"
    } else {
        "annotated"
    };
    for (resource, names) in resolve_targets(ctx, &targets).await? {
        for name in names {
            let url = resource.url(
                resource.namespaced.then_some(ctx.namespace.as_str()),
                Some(&name),
            );
            let current = ctx.api.get_json(&url).await?;
            let mut patch = serde_json::Map::new();
            for c in &changes {
                if let Some(key) = c.strip_suffix('-').filter(|_| !c.contains('=')) {
                    patch.insert(key.to_owned(), Value::Null);
                    continue;
                }
                let (k, v) = c.split_once('=').expect("filtered on '='");
                if let Some(existing) = current["metadata"][field][k].as_str()
                    && existing != v
                    && !args.overwrite
                {
                    bail!("'{k}' already has a value ({existing}), and --overwrite is false");
                }
                patch.insert(k.to_owned(), json!(v));
            }
            ctx.api
                .write(
                    Method::PATCH,
                    &format!("{url}?fieldManager=kubectl-label"),
                    "application/merge-patch+json",
                    &json!({"metadata": {field: patch}}),
                )
                .await?;
            println!("{}/{name} {verb}", resource.kind_ref());
        }
    }
    Ok(())
}
