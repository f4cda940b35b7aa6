//! Skiff's own logs as files the node's log collector ships: one file per component
//! (`apiserver.log`, `scheduler.log`, `controller-manager.log`, `agent.log`, `search.log`,
//! `skiffd.log`) in the agent's component log directory (`/var/log/skiff` to hostPath volumes),
//! each event a JSON line in the CRI format the collector reads, so it arrives with its exact
//! time, its level and a `component` label.
//!
//! Logging starts before the directory is known; events before [`install`] go to stderr only.
//! Files are rotated by rename at 16 MiB, keeping one old file, which the collector follows
//! like any rotated container log.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;

const ROTATE_BYTES: u64 = 16 * 1024 * 1024;

static FILES: OnceLock<Mutex<Files>> = OnceLock::new();

struct Files {
    dir: PathBuf,
    open: HashMap<&'static str, (File, u64)>,
}

/// Start writing component logs under `dir`.
pub(crate) fn install(dir: PathBuf) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let _ = FILES.set(Mutex::new(Files {
        dir,
        open: HashMap::new(),
    }));
    Ok(())
}

/// The component an event belongs to, from the crate that emitted it.
fn component(target: &str) -> &'static str {
    let krate = target.split("::").next().unwrap_or(target);
    match krate {
        "skiff_apiserver" | "skiff_store" | "skiff_api" => "apiserver",
        "skiff_scheduler" => "scheduler",
        "skiff_controllers" | "skiff_events" | "skiff_leader" => "controller-manager",
        "skiff_agent" | "skiff_pause" => "agent",
        "skiff_search" => "search",
        _ => "skiffd",
    }
}

impl Files {
    fn append(&mut self, component: &'static str, event: &[u8]) -> std::io::Result<()> {
        let ts = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S.%9fZ")
            .to_string();
        let mut out = Vec::with_capacity(event.len() + 48);
        for line in event.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.extend_from_slice(ts.as_bytes());
            out.extend_from_slice(b" stderr F ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        let path = self.dir.join(format!("{component}.log"));
        let (file, size) = match self.open.entry(component) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                let size = f.metadata()?.len();
                e.insert((f, size))
            }
        };
        file.write_all(&out)?;
        *size += out.len() as u64;
        if *size >= ROTATE_BYTES {
            std::fs::rename(&path, self.dir.join(format!("{component}.log.1")))?;
            self.open.remove(component);
        }
        Ok(())
    }
}

/// The `MakeWriter` of the component log layer: one writer per event, which appends the
/// formatted event to its component's file when dropped.
pub(crate) struct ComponentLogs;

pub(crate) struct EventWriter {
    component: &'static str,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let Some(files) = FILES.get() else { return };
        if self.buf.is_empty() {
            return;
        }
        if let Ok(mut f) = files.lock() {
            // A full disk must not take the process down with it; stderr still has the event.
            let _ = f.append(self.component, &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for ComponentLogs {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            component: "skiffd",
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        EventWriter {
            component: component(meta.target()),
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_land_in_their_component_file_in_cri_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files {
            dir: dir.path().to_owned(),
            open: HashMap::new(),
        };
        files
            .append(
                component("skiff_scheduler::queue"),
                b"{\"level\":\"INFO\"}\n",
            )
            .unwrap();
        files
            .append(component("hyper::proto"), b"{\"x\":1}\n")
            .unwrap();
        let text = std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap();
        let (ts, rest) = text.split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
        assert_eq!(rest, "stderr F {\"level\":\"INFO\"}\n");
        assert!(dir.path().join("skiffd.log").exists());
        // Rotation by rename.
        let big = vec![b'x'; ROTATE_BYTES as usize];
        files.append("agent", &big).unwrap();
        assert!(dir.path().join("agent.log.1").exists());
        files.append("agent", b"after\n").unwrap();
        let after = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
        assert!(after.ends_with("stderr F after\n"));
    }
}
