//! The container shim of the process runtime (`skiffd container-shim <state-dir>`), the role
//! conmon and containerd-shim play: one small process per container that starts the command in
//! its own process group and cgroups, writes its output to the CRI log file, and records the exit
//! status. It runs in its own session, so containers keep running — and their output keeps
//! flowing — while the agent restarts.
//!
//! State directory files: `config.json` (written by the agent), `shim.pid`, `pid` and `started`
//! (once the command runs), `exit` (when it ended). Files are written to a temporary name and
//! renamed, so readers never see half a file.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cgroups::Cgroups;
use crate::logs::writer::{CriLogWriter, LineSplitter, Rotation, StreamKind};

/// What the agent tells the shim to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShimConfig {
    /// argv.
    pub argv: Vec<String>,
    /// Environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// CRI log file.
    pub log_path: PathBuf,
    /// Rotate at this size.
    pub log_max_bytes: u64,
    /// Keep this many log files.
    pub log_max_files: usize,
    /// Container id, naming its cgroups.
    pub cgroup_id: String,
    /// `cgroup.procs` files to join before starting the command.
    pub cgroup_procs: Vec<PathBuf>,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Exit code; 128 + n for signal n.
    pub exit_code: i32,
    /// The signal, if one ended it.
    pub signal: Option<i32>,
    /// When it ended.
    pub finished_at: String,
    /// Killed by the memory limit.
    pub oom_killed: bool,
    /// `StartError` when the command could not be started.
    pub reason: Option<String>,
    /// Why it could not start.
    pub message: Option<String>,
}

/// Write `contents` to `dir/name` atomically.
pub fn write_state(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, dir.join(name))
}

/// Run the shim for the container in `state_dir`; returns the process exit code for the shim.
pub fn run(state_dir: &Path) -> i32 {
    match supervise(state_dir) {
        Ok(()) => 0,
        Err(e) => {
            let _ = std::fs::write(state_dir.join("shim.error"), format!("{e:#}"));
            1
        }
    }
}

fn supervise(state_dir: &Path) -> anyhow::Result<()> {
    write_state(
        state_dir,
        "shim.pid",
        std::process::id().to_string().as_bytes(),
    )?;
    let config: ShimConfig =
        serde_json::from_slice(&std::fs::read(state_dir.join("config.json"))?)?;
    // Join the container's cgroups first, so the command inherits them from the start.
    for procs in &config.cgroup_procs {
        if let Err(e) = std::fs::write(procs, std::process::id().to_string()) {
            eprintln!("joining {}: {e}", procs.display());
        }
    }
    let rotation = Rotation {
        max_bytes: config.log_max_bytes,
        max_files: config.log_max_files,
    };
    let writer = Arc::new(Mutex::new(CriLogWriter::open(&config.log_path, rotation)?));
    let Some((program, args)) = config.argv.split_first() else {
        anyhow::bail!("empty command");
    };
    let spawned = Command::new(program)
        .args(args)
        .env_clear()
        .envs(config.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&config.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let message = format!("failed to start container process: exec: \"{program}\": {e}");
            let mut w = writer.lock().expect("log writer");
            let _ = w.write_line(
                StreamKind::Stderr,
                Timestamp::now(),
                message.as_bytes(),
                true,
            );
            let _ = w.flush();
            let record = ExitRecord {
                exit_code: 128,
                signal: None,
                finished_at: Timestamp::now().to_string(),
                oom_killed: false,
                reason: Some("StartError".into()),
                message: Some(message),
            };
            write_state(state_dir, "exit", &serde_json::to_vec(&record)?)?;
            return Ok(());
        }
    };
    write_state(
        state_dir,
        "started",
        Timestamp::now().to_string().as_bytes(),
    )?;
    write_state(state_dir, "pid", child.id().to_string().as_bytes())?;
    let (done_tx, done_rx) = mpsc::channel();
    for (pipe, kind) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            StreamKind::Stdout,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            StreamKind::Stderr,
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let (writer, done_tx) = (writer.clone(), done_tx.clone());
        std::thread::spawn(move || {
            let mut splitter = LineSplitter::default();
            let mut buf = vec![0u8; 64 * 1024];
            let write = |line: &[u8], complete: bool| {
                let mut w = writer.lock().expect("log writer");
                if let Err(e) = w.write_line(kind, Timestamp::now(), line, complete) {
                    eprintln!("writing log: {e}");
                }
            };
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => splitter.feed(&buf[..n], write),
                }
            }
            splitter.finish(write);
            let _ = done_tx.send(());
        });
    }
    drop(done_tx);
    let status = child.wait()?;
    // Output may still be in the pipes; a background grandchild may also hold them open
    // forever, so wait a bounded time.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let _ = writer.lock().expect("log writer").flush();
    use std::os::unix::process::ExitStatusExt;
    let signal = status.signal();
    let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
    let oom_killed = Cgroups::detect().oom_killed(&config.cgroup_id);
    let record = ExitRecord {
        exit_code,
        signal,
        finished_at: Timestamp::now().to_string(),
        oom_killed,
        reason: None,
        message: None,
    };
    write_state(state_dir, "exit", &serde_json::to_vec(&record)?)?;
    Ok(())
}
