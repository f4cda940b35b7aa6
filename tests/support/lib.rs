//! Helpers for end-to-end tests: start real `skiffd` processes on free ports, run the real
//! `kubectl` and our `skiff` against them, and speak raw HTTP to the loopback insecure port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod prometheus;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The directory holding the workspace's binaries, built once per test process.
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "skiffd",
                "-p",
                "skiff-cli",
                "-p",
                "skiff-pause",
                "-p",
                "skiff-testapp",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build");
        assert!(
            status.success(),
            "building skiffd, skiff, skiff-pause and skiff-testapp failed"
        );
        // The test executable lives in <target>/<profile>/deps.
        let exe = std::env::current_exe().expect("test executable path");
        exe.parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf()
    })
}

/// The busybox image examples/ use; [`docker_test_images`] tags Debian's busybox-static with it.
pub const EXAMPLES_BUSYBOX: &str = "busybox:1.35";

/// Import the test images into the local Docker engine (once per process): `skiff-testapp:e2e`
/// (the test workload, entrypoint `/bin/skiff-testapp`) and `busybox:e2e` (Debian's busybox-static
/// with every applet, also tagged `busybox:1.35` for examples/). There is no registry: images are
/// tars of host files.
pub fn docker_test_images() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let testapp = skiff_agent::runtime::images::ImageSpec {
            tag: "skiff-testapp:e2e".into(),
            files: vec![(bin_dir().join("skiff-testapp"), "/bin/skiff-testapp".into())],
            changes: vec![
                r#"ENTRYPOINT ["/bin/skiff-testapp"]"#.into(),
                "ENV PATH=/bin".into(),
            ],
            with_libraries: true,
            ..Default::default()
        };
        // Every applet the binary has (httpd, bc, date, … for the examples).
        let applets: Vec<String> = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
            .map(str::to_owned)
            .collect();
        let busybox = skiff_agent::runtime::images::ImageSpec {
            tag: "busybox:e2e".into(),
            files: vec![(PathBuf::from("/bin/busybox"), "/bin/busybox".into())],
            symlinks: applets
                .iter()
                .map(|a| (format!("/bin/{a}"), "busybox".to_owned()))
                .collect(),
            changes: vec![r#"CMD ["/bin/sh"]"#.into()],
            with_libraries: false,
        };
        for spec in [testapp, busybox] {
            if spec.tag.starts_with("busybox") && !Path::new("/bin/busybox").exists() {
                return Err("/bin/busybox is missing: install Debian's busybox-static".into());
            }
            let tar = skiff_agent::runtime::images::image_tar(&spec).map_err(|e| e.to_string())?;
            let mut cmd = Command::new("docker");
            cmd.arg("import");
            for c in &spec.changes {
                cmd.args(["-c", c]);
            }
            let mut child = cmd
                .args(["-", &spec.tag])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(&tar)
                .map_err(|e| e.to_string())?;
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("docker import {} failed", spec.tag));
            }
        }
        // The examples name the upstream tag of the same busybox version.
        let tagged = Command::new("docker")
            .args(["tag", "busybox:e2e", EXAMPLES_BUSYBOX])
            .status()
            .map_err(|e| e.to_string())?;
        if !tagged.success() {
            return Err(format!("docker tag busybox:e2e {EXAMPLES_BUSYBOX} failed"));
        }
        Ok(())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// Poll `f` every 50 ms until it returns `Some`, or fail after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command's outcome.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Stdout and stderr together, as a terminal shows them.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panic unless the command succeeded and printed something matching `pattern`.
    #[track_caller]
    pub fn expect_ok(&self, pattern: &str) -> &Self {
        let re = regex_lite(pattern);
        assert!(
            self.code == 0 && re(&self.all()),
            "expected success matching {pattern:?}, got code {}:\n{}",
            self.code,
            self.all()
        );
        self
    }

    /// Panic unless the command failed with `code` and printed something matching `pattern`.
    #[track_caller]
    pub fn expect_fail(&self, code: i32, pattern: &str) -> &Self {
        let re = regex_lite(pattern);
        assert!(
            self.code == code && re(&self.all()),
            "expected exit {code} matching {pattern:?}, got code {}:\n{}",
            self.code,
            self.all()
        );
        self
    }
}

/// A multi-line regular expression matcher (`^` anchors at line starts).
fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
    let re = regex::Regex::new(&format!("(?m){pattern}")).expect("valid test pattern");
    move |text: &str| re.is_match(text)
}

/// A running `skiffd up`.
pub struct Cluster {
    /// The data directory.
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    /// `https://127.0.0.1:port`.
    pub url: String,
    /// `127.0.0.1:port` of the plain-HTTP admin port.
    pub insecure_addr: String,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    cache: tempfile::TempDir,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// This cluster's node name (unique per test cluster).
    pub node: String,
    /// `127.0.0.1:port` of the log search service (with `--search-port`).
    pub search_addr: Option<String>,
}

impl Cluster {
    /// Start a cluster in a fresh data directory.
    pub fn start() -> Result<Self> {
        Self::start_with(&[])
    }

    /// Start with extra `skiffd up` flags.
    pub fn start_with(extra: &[&str]) -> Result<Self> {
        Self::start_with_env(extra, &[])
    }

    /// Start a cluster with extra flags and environment variables (e.g. `OTEL_*`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cluster = Cluster {
            dir,
            child: None,
            url: String::new(),
            insecure_addr: String::new(),
            kubeconfig: PathBuf::new(),
            cache: tempfile::tempdir()?,
            extra_args: extra.iter().map(|s| (*s).to_owned()).collect(),
            extra_env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            node: format!("node-{:08x}", rand_u32()),
            search_addr: None,
        };
        cluster.launch()?;
        Ok(cluster)
    }

    fn launch(&mut self) -> Result<()> {
        let endpoints = self.dir.path().join("endpoints.json");
        let _ = std::fs::remove_file(&endpoints);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("skiffd.log"))?;
        let mut defaults: Vec<String> = Vec::new();
        let given = |flag: &str| self.extra_args.iter().any(|a| a == flag);
        if !given("--runtime") {
            defaults.extend(["--runtime".into(), "process".into()]);
        }
        // The log pipeline (search service, collector DaemonSet) only where a test asks for it
        // with `--search-port`: other tests count pods and DaemonSets.
        if !given("--search-port") {
            defaults.push("--disable-log-pipeline".into());
        }
        // Many clusters run at once: the metrics server takes a free port unless a test fixes one.
        for flag in [
            "--metrics-server-port",
            "--scheduler-metrics-port",
            "--controller-manager-metrics-port",
            "--state-metrics-port",
        ] {
            if !given(flag) {
                defaults.extend([flag.into(), "0".into()]);
            }
        }
        let logs = self.dir.path().join("logs");
        defaults.extend([
            "--agent-port".into(),
            "0".into(),
            "--node-name".into(),
            self.node.clone(),
            "--pod-log-dir".into(),
            logs.join("pods").display().to_string(),
            "--container-log-dir".into(),
            logs.join("containers").display().to_string(),
            "--node-ip".into(),
            "127.0.0.1".into(),
        ]);
        let child = Command::new(bin_dir().join("skiffd"))
            .args(["up", "--data-dir"])
            .arg(self.dir.path())
            .args(["--port", "0", "--insecure-port", "0"])
            .args(&defaults)
            .args(&self.extra_args)
            .env("SKIFF_LOG", "info,skiff_apiserver=debug")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting skiffd")?;
        self.child = Some(child);
        let info: Value = wait_for(Duration::from_secs(30), "skiffd endpoints.json", || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("skiffd exited early ({status}):\n{}", self.log());
            }
            let text = std::fs::read_to_string(&endpoints).ok()?;
            serde_json::from_str(&text).ok()
        })?;
        self.url = info["apiserver"].as_str().unwrap_or_default().to_owned();
        self.insecure_addr = info["apiserverInsecure"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches("http://")
            .to_owned();
        self.kubeconfig = PathBuf::from(info["kubeconfig"].as_str().unwrap_or_default());
        self.search_addr = info["search"]
            .as_str()
            .map(|s| s.trim_start_matches("http://").to_owned());
        Ok(())
    }

    /// skiffd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("skiffd.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL the daemon (no chance to flush anything).
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start again on the same data directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Start again after a `kill9`.
    pub fn relaunch(&mut self) -> Result<()> {
        self.launch()
    }

    /// Run the real kubectl with this cluster's kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.kubectl_in(args, None)
    }

    /// Run kubectl with `stdin` as its input.
    pub fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args);
        run(cmd, stdin)
    }

    /// Run our `skiff` CLI with this cluster's kubeconfig.
    pub fn skiff(&self, args: &[&str]) -> Run {
        self.skiff_in(args, None)
    }

    /// Run `skiff` with `stdin` as its input.
    pub fn skiff_in(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(bin_dir().join("skiff"));
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("NO_COLOR", "1")
            .args(args);
        run(cmd, stdin)
    }

    /// A raw HTTP/1.1 request to the insecure admin port.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<HttpResponse> {
        http(&self.insecure_addr, method, path, content_type, body)
    }

    /// The `/metrics` URL of a component (`scheduler`, `controllerManager`, `stateMetrics`,
    /// `metricsServer`, `search`, `apiserver`) from endpoints.json.
    pub fn metrics_url(&self, component: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("endpoints.json"))
            .expect("endpoints.json");
        let info: Value = serde_json::from_str(&text).expect("endpoints.json is JSON");
        info["metrics"][component]
            .as_str()
            .unwrap_or_else(|| panic!("no {component} metrics in {text}"))
            .to_owned()
    }

    /// A component's metrics exposition (plain HTTP on loopback).
    pub fn component_metrics(&self, component: &str) -> String {
        let url = self.metrics_url(component);
        let rest = url.trim_start_matches("http://");
        let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let r = http(addr, "GET", path, None, b"").expect("metrics answer");
        String::from_utf8_lossy(&r.body).into_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        self.remove_workloads();
    }
}

/// A long-running `skiffd <subcommand>` process (an agent, a standalone scheduler or controller
/// manager) logging to `<dir>/<subcommand>.log`.
pub struct Daemon {
    /// Its own scratch directory (data dir, log).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    subcommand: String,
    args: Vec<String>,
}

impl Daemon {
    /// Start `skiffd <subcommand> <args>`.
    pub fn start(subcommand: &str, args: &[String]) -> Daemon {
        Self::start_in(tempfile::tempdir().unwrap(), subcommand, args)
    }

    fn start_in(dir: tempfile::TempDir, subcommand: &str, args: &[String]) -> Daemon {
        let mut daemon = Daemon {
            dir,
            child: None,
            subcommand: subcommand.to_owned(),
            args: args.to_vec(),
        };
        daemon.launch();
        daemon
    }

    /// Start the (stopped) process again with the same arguments.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        self.child = Some(
            Command::new(bin_dir().join("skiffd"))
                .arg(&self.subcommand)
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.subcommand))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stop with SIGTERM and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Kill at once (SIGKILL), as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A `skiffd agent` process joining a cluster, running pods with the process runtime.
pub struct Agent {
    daemon: Daemon,
}

impl std::ops::Deref for Agent {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

impl std::ops::DerefMut for Agent {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.daemon
    }
}

impl Agent {
    /// Start `skiffd agent` with `join_args` (e.g. `--kubeconfig <admin>`) as node `node`.
    pub fn start(join_args: &[String], node: &str) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let testapp = bin_dir().join("skiff-testapp").display().to_string();
        let logs = dir.path().join("logs");
        let mut args: Vec<String> = join_args.to_vec();
        for extra in [
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--runtime",
            "process",
            "--node-name",
            node,
            "--node-ip",
            "127.0.0.1",
            "--agent-port",
            "0",
            "--image-alias",
            &format!("skiff-testapp={testapp}"),
            "--pod-log-dir",
            logs.join("pods").to_str().unwrap(),
            "--container-log-dir",
            logs.join("containers").to_str().unwrap(),
        ] {
            args.push(extra.to_owned());
        }
        Agent {
            daemon: Daemon::start_in(dir, "agent", &args),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.daemon.kill9();
        kill_process_workloads(&self.daemon.dir.path().join("agent/process/containers"));
    }
}

/// Run `skiffd agent` to completion (it should fail before joining) and return what it said.
impl Cluster {
    /// Stop what the agent started (containers keep running when an agent stops, as kubelet's
    /// do): process-runtime shims and processes under the data dir, and this node's Docker
    /// containers.
    pub fn remove_workloads(&self) {
        kill_process_workloads(&self.dir.path().join("agent/process/containers"));
        if let Ok(out) = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.skiff.node={}", self.node),
            ])
            .output()
        {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// Kill the shims and processes of a process-runtime agent's containers.
fn kill_process_workloads(containers: &Path) {
    for entry in std::fs::read_dir(containers)
        .into_iter()
        .flatten()
        .flatten()
    {
        for file in ["pid", "shim.pid"] {
            if let Some(pid) = std::fs::read_to_string(entry.path().join(file))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

/// Run `cmd` to completion with `stdin` as its input.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Run {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning command");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    Run::from(child.wait_with_output().expect("waiting for command"))
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
    out
}
