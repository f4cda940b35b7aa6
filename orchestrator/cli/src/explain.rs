//! `skiff explain TYPE[.field.path]`: field documentation from the server's OpenAPI v3.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use serde_json::Value;

use crate::context::Ctx;

/// Flags of `skiff explain`.
#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    /// TYPE or TYPE.field.subfield.
    path: String,
    /// Print the fields of every nested level.
    #[arg(long)]
    recursive: bool,
}

fn resolve_ref<'a>(schemas: &'a Value, schema: &'a Value) -> &'a Value {
    let reference = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str());
    match reference.and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &schemas[name],
        None => schema,
    }
}

fn type_name(schemas: &Value, schema: &Value) -> String {
    if let Some(r) = schema["$ref"]
        .as_str()
        .or_else(|| schema["allOf"][0]["$ref"].as_str())
    {
        let name = r.rsplit('.').next().unwrap_or("Object");
        let target = resolve_ref(schemas, schema);
        if target["type"] == "string" {
            return "string".into();
        }
        return name.to_owned();
    }
    match schema["type"].as_str() {
        Some("array") => format!("[]{}", type_name(schemas, &schema["items"])),
        Some("object") if schema.get("additionalProperties").is_some() => {
            format!(
                "map[string]{}",
                type_name(schemas, &schema["additionalProperties"])
            )
        }
        Some(t) => t.to_owned(),
        None => "Object".into(),
    }
}

fn indent(text: &str, by: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(by)))
        .collect()
}

pub(crate) async fn run(ctx: &Ctx, args: ExplainArgs) -> Result<()> {
    let mut parts = args.path.split('.');
    let ty = parts.next().unwrap_or_default();
    let fields: Vec<&str> = parts.collect();
    let resource = ctx.api.resolve(ty).await?;
    let gv = if resource.group.is_empty() {
        format!("api/{}", resource.version)
    } else {
        format!("apis/{}/{}", resource.group, resource.version)
    };
    let doc = ctx.api.get_json(&format!("/openapi/v3/{gv}")).await?;
    let schemas = &doc["components"]["schemas"];
    let (_, root) = schemas
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, s)| {
            s["x-kubernetes-group-version-kind"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["kind"] == resource.kind.as_str())
        })
        .ok_or_else(|| anyhow!("couldn't find resource for \"{}\"", resource.kind))?;
    let mut schema = root;
    let mut field_schema = None;
    for f in &fields {
        let resolved = resolve_ref(schemas, schema);
        let resolved = if resolved["type"] == "array" {
            resolve_ref(schemas, &resolved["items"])
        } else {
            resolved
        };
        let Some(next) = resolved["properties"].get(*f) else {
            bail!("field \"{f}\" does not exist");
        };
        field_schema = Some(next);
        schema = next;
    }
    println!("GROUP:      {}", resource.group);
    println!("KIND:       {}", resource.kind);
    println!("VERSION:    {}\n", resource.version);
    if let (Some(f), Some(last)) = (field_schema, fields.last()) {
        println!("FIELD: {last} <{}>\n", type_name(schemas, f));
    }
    let target = resolve_ref(schemas, schema);
    let target = if target["type"] == "array" {
        resolve_ref(schemas, &target["items"])
    } else {
        target
    };
    let description = schema["description"]
        .as_str()
        .or(target["description"].as_str())
        .unwrap_or("<empty>");
    println!("DESCRIPTION:\n{}", indent(description, 4));
    if let Some(props) = target["properties"].as_object() {
        println!("FIELDS:");
        let required: Vec<&str> = target["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (name, p) in props {
            let req = if required.contains(&name.as_str()) {
                " -required-"
            } else {
                ""
            };
            println!("  {name}\t<{}>{req}", type_name(schemas, p));
            if !args.recursive {
                let d = p["description"]
                    .as_str()
                    .or(resolve_ref(schemas, p)["description"].as_str())
                    .unwrap_or_default();
                print!("{}", indent(d, 4));
                println!();
            }
        }
    }
    Ok(())
}
