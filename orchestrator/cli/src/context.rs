//! The kubeconfig: building a client from it (honouring `--kubeconfig`, `KUBECONFIG`,
//! `--context` and `-n`) and the `skiff config` subcommands that read and edit it.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

use crate::Global;
use crate::api::Api;
use crate::output::print_rows;

/// Everything a command needs: the client and the namespace in effect.
pub(crate) struct Ctx {
    pub(crate) api: Api,
    /// `-n`, else the context's namespace, else `default`.
    pub(crate) namespace: String,
}

impl Ctx {
    pub(crate) async fn load(g: &Global) -> Result<Self> {
        let kubeconfig = match &g.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?,
            None => {
                Kubeconfig::read().context("reading kubeconfig (set KUBECONFIG or --kubeconfig)")?
            }
        };
        let options = KubeConfigOptions {
            context: g.context.clone(),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
        let namespace = g
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)?;
        Ok(Ctx {
            api: Api::new(client),
            namespace,
        })
    }
}

/// `skiff config …`.
#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// Show the merged kubeconfig (secrets redacted unless --raw).
    View {
        /// Show certificate and token data.
        #[arg(long)]
        raw: bool,
    },
    /// Print the current context.
    CurrentContext,
    /// List contexts.
    GetContexts,
    /// Switch the current context.
    UseContext {
        /// Context name.
        name: String,
    },
    /// Change a context's settings (its namespace).
    SetContext {
        /// Context name (default: the current one).
        name: Option<String>,
        /// Change the current context. The context's namespace comes from `--namespace`.
        #[arg(long)]
        current: bool,
    },
}

fn kubeconfig_path(g: &Global) -> Result<PathBuf> {
    if let Some(p) = &g.kubeconfig {
        return Ok(p.clone());
    }
    if let Some(list) = std::env::var_os("KUBECONFIG")
        && let Some(first) = std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty())
    {
        return Ok(first);
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    Ok(PathBuf::from(home).join(".kube").join("config"))
}

fn read_config(path: &std::path::Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn write_config(path: &std::path::Path, config: &Value) -> Result<()> {
    std::fs::write(path, serde_norway::to_string(config)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn redact(config: &mut Value) {
    for user in config["users"].as_array_mut().into_iter().flatten() {
        if let Some(u) = user["user"].as_object_mut() {
            for key in ["client-certificate-data", "client-key-data", "token"] {
                if u.contains_key(key) {
                    u.insert(
                        key.into(),
                        json!(if key == "token" {
                            "REDACTED"
                        } else {
                            "DATA+OMITTED"
                        }),
                    );
                }
            }
        }
    }
    for cluster in config["clusters"].as_array_mut().into_iter().flatten() {
        if let Some(c) = cluster["cluster"].as_object_mut()
            && c.contains_key("certificate-authority-data")
        {
            c.insert("certificate-authority-data".into(), json!("DATA+OMITTED"));
        }
    }
}

pub(crate) fn run_config(g: &Global, cmd: ConfigCommand) -> Result<()> {
    let path = kubeconfig_path(g)?;
    let mut config = read_config(&path)?;
    let current = config["current-context"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match cmd {
        ConfigCommand::View { raw } => {
            if !raw {
                redact(&mut config);
            }
            print!("{}", serde_norway::to_string(&config)?);
        }
        ConfigCommand::CurrentContext => {
            if current.is_empty() {
                bail!("current-context is not set");
            }
            println!("{current}");
        }
        ConfigCommand::GetContexts => {
            let mut rows = vec![vec![
                "CURRENT".into(),
                "NAME".into(),
                "CLUSTER".into(),
                "AUTHINFO".into(),
                "NAMESPACE".into(),
            ]];
            for c in config["contexts"].as_array().into_iter().flatten() {
                let name = c["name"].as_str().unwrap_or_default();
                let s = |k: &str| c["context"][k].as_str().unwrap_or_default().to_owned();
                rows.push(vec![
                    if name == current {
                        "*".into()
                    } else {
                        String::new()
                    },
                    name.to_owned(),
                    s("cluster"),
                    s("user"),
                    s("namespace"),
                ]);
            }
            print_rows(&rows);
        }
        ConfigCommand::UseContext { name } => {
            let exists = config["contexts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == name.as_str());
            if !exists {
                bail!("no context exists with the name: \"{name}\"");
            }
            config["current-context"] = json!(name);
            write_config(&path, &config)?;
            println!("Switched to context \"{name}\".");
        }
        ConfigCommand::SetContext {
            name,
            current: use_current,
        } => {
            let namespace = g.namespace.clone();
            let target = match (name, use_current) {
                (Some(n), _) => n,
                (None, true) => current.clone(),
                (None, false) => bail!("you must specify a non-empty context name or --current"),
            };
            let contexts = config["contexts"]
                .as_array_mut()
                .ok_or_else(|| anyhow!("kubeconfig has no contexts"))?;
            let created = !contexts.iter().any(|c| c["name"] == target.as_str());
            if created {
                contexts.push(json!({"name": target, "context": {}}));
            }
            let entry = contexts
                .iter_mut()
                .find(|c| c["name"] == target.as_str())
                .expect("just ensured");
            if let Some(ns) = namespace {
                entry["context"]["namespace"] = json!(ns);
            }
            write_config(&path, &config)?;
            println!(
                "Context \"{target}\" {}.",
                if created { "created" } else { "modified" }
            );
        }
    }
    Ok(())
}
