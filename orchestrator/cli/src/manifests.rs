//! Reading manifests from files, directories and stdin, with errors naming the file and line.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// One object read from a manifest.
pub(crate) struct Manifest {
    /// File name or `STDIN`.
    pub(crate) source: String,
    pub(crate) object: Value,
}

/// Read `-f` arguments: files, directories (their .yaml/.yml/.json files; subdirectories with
/// `recursive`), or `-` for stdin.
pub(crate) fn read(files: &[String], recursive: bool) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading stdin")?;
            push_documents(&mut out, "STDIN", &text)?;
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            read_dir(&mut out, path, recursive)?;
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("the path \"{f}\" does not exist"))?;
            push_documents(&mut out, f, &text)?;
        }
    }
    if out.is_empty() {
        bail!("no objects passed to apply");
    }
    Ok(out)
}

fn read_dir(out: &mut Vec<Manifest>, dir: &Path, recursive: bool) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                read_dir(out, &p, recursive)?;
            }
            continue;
        }
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if matches!(ext, "yaml" | "yml" | "json") {
            let text = std::fs::read_to_string(&p)?;
            push_documents(out, &p.display().to_string(), &text)?;
        }
    }
    Ok(())
}

fn push_documents(out: &mut Vec<Manifest>, source: &str, text: &str) -> Result<()> {
    let docs =
        skiff_api::yaml::parse_documents(source, text).map_err(|e| anyhow::anyhow!("{e}"))?;
    out.extend(docs.into_iter().map(|object| Manifest {
        source: source.to_owned(),
        object,
    }));
    Ok(())
}
