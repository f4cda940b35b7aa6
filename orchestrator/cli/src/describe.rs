//! `skiff describe`: the object's metadata, a readable rendering of its spec and status (with
//! kind-specific summaries for pods and workloads), and its events.

use anyhow::Result;
use clap::Args;
use serde_json::Value;

use crate::context::Ctx;
use crate::get::resolve_targets;
use crate::output::format_rows;

/// Flags of `skiff describe`.
#[derive(Args, Debug)]
pub(crate) struct DescribeArgs {
    /// TYPE [NAME…] or TYPE/NAME.
    #[arg(required = true)]
    targets: Vec<String>,
    /// Describe everything matching this label selector.
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

pub(crate) async fn run(ctx: &Ctx, args: DescribeArgs) -> Result<()> {
    let mut first = true;
    for (resource, names) in resolve_targets(ctx, &args.targets).await? {
        let ns = resource.namespaced.then_some(ctx.namespace.as_str());
        let objects: Vec<Value> = if names.is_empty() {
            let url = format!(
                "{}?{}",
                resource.url(ns, None),
                crate::get::form_query(args.selector.as_deref(), None).finish()
            );
            ctx.api.get_json(&url).await?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        } else {
            let mut v = Vec::new();
            for n in names {
                v.push(ctx.api.get_json(&resource.url(ns, Some(&n))).await?);
            }
            v
        };
        for obj in objects {
            if !first {
                println!("\n");
            }
            first = false;
            print!("{}", describe_object(&resource.kind, &obj));
            print!("{}", events_section(ctx, &obj).await);
        }
    }
    Ok(())
}

fn field(out: &mut String, label: &str, value: &str) {
    out.push_str(&format!("{:<16}{}\n", format!("{label}:"), value));
}

fn map_lines(out: &mut String, label: &str, map: &Value, sep: &str) {
    let pairs: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}{sep}{}", v.as_str().unwrap_or_default()))
        .collect();
    match pairs.split_first() {
        None => field(out, label, "<none>"),
        Some((head, rest)) => {
            field(out, label, head);
            for p in rest {
                out.push_str(&format!("{:<16}{p}\n", ""));
            }
        }
    }
}

/// Render one object.
pub(crate) fn describe_object(kind: &str, obj: &Value) -> String {
    let mut out = String::new();
    let meta = &obj["metadata"];
    field(&mut out, "Name", meta["name"].as_str().unwrap_or_default());
    if let Some(ns) = meta["namespace"].as_str() {
        field(&mut out, "Namespace", ns);
    }
    field(
        &mut out,
        "CreationTimestamp",
        meta["creationTimestamp"].as_str().unwrap_or_default(),
    );
    map_lines(&mut out, "Labels", &meta["labels"], "=");
    let mut annotations = meta["annotations"].clone();
    if let Some(a) = annotations.as_object_mut() {
        a.remove(skiff_api::three_way::LAST_APPLIED);
    }
    map_lines(&mut out, "Annotations", &annotations, ": ");
    match kind {
        "Pod" => pod_summary(&mut out, obj),
        "Deployment" | "ReplicaSet" | "StatefulSet" => {
            let s = &obj["status"];
            field(
                &mut out,
                "Replicas",
                &format!(
                    "{} desired | {} updated | {} total | {} available | {} unavailable",
                    obj["spec"]["replicas"].as_i64().unwrap_or(0),
                    s["updatedReplicas"].as_i64().unwrap_or(0),
                    s["replicas"].as_i64().unwrap_or(0),
                    s["availableReplicas"].as_i64().unwrap_or(0),
                    s["unavailableReplicas"].as_i64().unwrap_or(0),
                ),
            );
            field(
                &mut out,
                "Selector",
                &skiff_api::selector::label::format_structured(&obj["spec"]["selector"]),
            );
        }
        _ => {}
    }
    for section in ["spec", "data", "status"] {
        if let Some(v) = obj.get(section).filter(|v| !v.is_null()) {
            out.push_str(&format!("{}:\n", capitalize(section)));
            let yaml = serde_norway::to_string(v).unwrap_or_default();
            for line in yaml.lines() {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn pod_summary(out: &mut String, pod: &Value) {
    let s = &pod["status"];
    field(
        out,
        "Node",
        pod["spec"]["nodeName"].as_str().unwrap_or("<none>"),
    );
    field(out, "Status", s["phase"].as_str().unwrap_or_default());
    field(out, "IP", s["podIP"].as_str().unwrap_or_default());
    out.push_str("Containers:\n");
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or_default();
        let status = s["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|cs| cs["name"] == name);
        out.push_str(&format!(
            "  {name}:\n    Image:          {}\n",
            c["image"].as_str().unwrap_or_default()
        ));
        if let Some(cs) = status {
            let state = cs["state"]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
                .unwrap_or_default();
            out.push_str(&format!(
                "    State:          {}\n    Ready:          {}\n    Restart Count:  {}\n",
                capitalize(&state),
                cs["ready"].as_bool().unwrap_or(false),
                cs["restartCount"].as_i64().unwrap_or(0)
            ));
        }
    }
    if let Some(conditions) = s["conditions"].as_array() {
        out.push_str("Conditions:\n  Type              Status\n");
        for c in conditions {
            out.push_str(&format!(
                "  {:<18}{}\n",
                c["type"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default()
            ));
        }
    }
}

async fn events_section(ctx: &Ctx, obj: &Value) -> String {
    let meta = &obj["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let selector = format!(
        "involvedObject.name={},involvedObject.namespace={},involvedObject.uid={}",
        meta["name"].as_str().unwrap_or_default(),
        meta["namespace"].as_str().unwrap_or_default(),
        meta["uid"].as_str().unwrap_or_default()
    );
    let url = format!(
        "/api/v1/namespaces/{ns}/events?{}",
        crate::get::form_query(None, Some(&selector)).finish()
    );
    let events = match ctx.api.get_json(&url).await {
        Ok(list) => list["items"].as_array().cloned().unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if events.is_empty() {
        return "Events:          <none>\n".into();
    }
    let now = jiff::Timestamp::now();
    let mut rows = vec![vec![
        "Type".into(),
        "Reason".into(),
        "Age".into(),
        "From".into(),
        "Message".into(),
    ]];
    rows.push(vec![
        "----".into(),
        "------".into(),
        "----".into(),
        "----".into(),
        "-------".into(),
    ]);
    for e in events {
        let last = e["lastTimestamp"].as_str().or(e["eventTime"].as_str());
        rows.push(vec![
            e["type"].as_str().unwrap_or_default().to_owned(),
            e["reason"].as_str().unwrap_or_default().to_owned(),
            skiff_api::time::age(last, now),
            e["source"]["component"]
                .as_str()
                .or(e["reportingComponent"].as_str())
                .unwrap_or_default()
                .to_owned(),
            e["message"].as_str().unwrap_or_default().trim().to_owned(),
        ]);
    }
    let body = format_rows(&rows);
    let indented: String = body.lines().map(|l| format!("  {l}\n")).collect();
    format!("Events:\n{indented}")
}
