//! Probes (startup, liveness, readiness) and lifecycle hook handlers: exec, tcpSocket and
//! httpGet (a 200–399 status passes), with upstream's defaults and thresholds. One task per
//! running container runs its probes and publishes the results in [`ProbeState`].

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// What the probes of one container have concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeState {
    /// The startup probe passed (or there is none).
    pub started: bool,
    /// The readiness probe passes (or there is none).
    pub ready: bool,
    /// The liveness or startup probe failed past its threshold: restart the container.
    pub failed: bool,
}

/// A probe or handler outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Passed.
    Success,
    /// Failed, with the reason shown in the Unhealthy event.
    Failure(String),
}

/// Resolve a port that may be a name to a number using the container's ports.
fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            if let Ok(n) = name.parse::<u16>() {
                return Ok(n);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {name:?} in the container"))
        }
    }
}

/// Run an exec action in the container.
pub(crate) async fn run_exec(
    runtime: &dyn Runtime,
    container_id: &str,
    action: &ExecAction,
    timeout: Duration,
) -> Outcome {
    let command = action.command.clone().unwrap_or_default();
    let run = async {
        let mut session = runtime
            .exec(container_id, command, false, false)
            .await
            .map_err(|e| e.to_string())?;
        let mut output = Vec::new();
        use futures::StreamExt;
        while let Some(chunk) = session.output.next().await {
            match chunk {
                Ok(crate::runtime::ExecChunk::Stdout(b) | crate::runtime::ExecChunk::Stderr(b)) => {
                    if output.len() < 10 * 1024 {
                        output.extend_from_slice(&b);
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let code = session.exit_code.await.map_err(|e| e.to_string())?;
        Ok((code, String::from_utf8_lossy(&output).trim().to_owned()))
    };
    match tokio::time::timeout(timeout, run).await {
        Err(_) => Outcome::Failure(format!("command timed out after {}s", timeout.as_secs())),
        Ok(Err(e)) => Outcome::Failure(e),
        Ok(Ok((0, _))) => Outcome::Success,
        Ok(Ok((code, out))) => Outcome::Failure(if out.is_empty() {
            format!("command exited with {code}")
        } else {
            out
        }),
    }
}

/// Connect to a TCP port.
pub(crate) async fn run_tcp(
    host: &str,
    action: &TCPSocketAction,
    container: &Container,
    timeout: Duration,
) -> Outcome {
    let port = match port_of(&action.port, container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    let host = action
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(host);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Outcome::Success,
        Ok(Err(e)) => Outcome::Failure(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Outcome::Failure(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// An HTTP GET; 200–399 passes.
pub(crate) async fn run_http(
    host: &str,
    action: &HTTPGetAction,
    container: &Container,
    timeout: Duration,
) -> Outcome {
    let port = match port_of(&action.port, container) {
        Ok(p) => p,
        Err(e) => return Outcome::Failure(e),
    };
    if action.scheme.as_deref() == Some("HTTPS") {
        return Outcome::Failure("HTTPS probes are not supported by this agent".into());
    }
    let host = action
        .host
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(host);
    let path = action
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let url = format!("http://{host}:{port}{}{path}", "");
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("Get \"{url}\": {e}"))?;
        tokio::spawn(conn);
        let mut request = hyper::Request::get(path)
            .header("Host", format!("{host}:{port}"))
            .header("User-Agent", "kube-probe/1.33");
        for h in action.http_headers.iter().flatten() {
            request = request.header(h.name.as_str(), h.value.as_str());
        }
        let request = request
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Outcome::Failure(format!(
            "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Outcome::Failure(e),
        Ok(Ok(s)) if (200..400).contains(&s) => Outcome::Success,
        Ok(Ok(s)) => Outcome::Failure(format!("HTTP probe failed with statuscode: {s}")),
    }
}

/// Run one probe's handler.
pub(crate) async fn run_probe(
    probe: &Probe,
    runtime: &dyn Runtime,
    container_id: &str,
    pod_ip: &str,
    container: &Container,
) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &probe.exec {
        run_exec(runtime, container_id, e, timeout).await
    } else if let Some(t) = &probe.tcp_socket {
        run_tcp(pod_ip, t, container, timeout).await
    } else if let Some(h) = &probe.http_get {
        run_http(pod_ip, h, container, timeout).await
    } else if probe.grpc.is_some() {
        Outcome::Failure("gRPC probes are not supported by this agent".into())
    } else {
        Outcome::Failure("probe has no handler".into())
    }
}

/// Events a probe task reports (as Unhealthy events).
pub(crate) type ProbeEvent = (String, String);

/// Run a container's probes until `stop`, publishing state in `tx` and failures in `events`;
/// `changed` wakes the pod worker when the state changes.
#[allow(
    clippy::too_many_arguments,
    reason = "the probe task's whole context, passed once"
)]
pub(crate) async fn probe_loop(
    runtime: Arc<dyn Runtime>,
    container: Container,
    container_id: String,
    pod_ip: String,
    tx: watch::Sender<ProbeState>,
    changed: Arc<Notify>,
    events: tokio::sync::mpsc::UnboundedSender<ProbeEvent>,
    stop: CancellationToken,
) {
    let startup = container.startup_probe.clone();
    let liveness = container.liveness_probe.clone();
    let readiness = container.readiness_probe.clone();
    let mut state = ProbeState {
        started: startup.is_none(),
        ready: readiness.is_none(),
        failed: false,
    };
    tx.send_replace(state);
    changed.notify_one();
    struct Counter {
        ok: i32,
        bad: i32,
        next: tokio::time::Instant,
    }
    let begin = tokio::time::Instant::now();
    let first = |p: &Option<Probe>| Counter {
        ok: 0,
        bad: 0,
        next: begin
            + Duration::from_secs(
                p.as_ref()
                    .and_then(|p| p.initial_delay_seconds)
                    .unwrap_or(0)
                    .max(0) as u64,
            ),
    };
    let (mut s, mut l, mut r) = (first(&startup), first(&liveness), first(&readiness));
    loop {
        let mut due = Vec::new();
        if !state.started {
            due.push(s.next);
        } else {
            if liveness.is_some() {
                due.push(l.next);
            }
            if readiness.is_some() {
                due.push(r.next);
            }
        }
        let Some(wake) = due.into_iter().min() else {
            stop.cancelled().await;
            return;
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = tokio::time::Instant::now();
        let before = state;
        for (kind, probe, counter) in [
            ("Startup", &startup, &mut s),
            ("Liveness", &liveness, &mut l),
            ("Readiness", &readiness, &mut r),
        ] {
            let Some(p) = probe else { continue };
            if counter.next > now
                || (kind != "Startup" && !state.started)
                || (kind == "Startup" && state.started)
            {
                continue;
            }
            counter.next = now + Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
            let outcome = run_probe(p, runtime.as_ref(), &container_id, &pod_ip, &container).await;
            match outcome {
                Outcome::Success => {
                    counter.ok += 1;
                    counter.bad = 0;
                    if counter.ok >= p.success_threshold.unwrap_or(1).max(1) {
                        match kind {
                            "Startup" => state.started = true,
                            "Readiness" => state.ready = true,
                            _ => {}
                        }
                    }
                }
                Outcome::Failure(msg) => {
                    counter.bad += 1;
                    counter.ok = 0;
                    let _ = events.send((kind.to_owned(), msg));
                    if counter.bad >= p.failure_threshold.unwrap_or(3).max(1) {
                        match kind {
                            "Readiness" => state.ready = false,
                            _ => state.failed = true,
                        }
                    }
                }
            }
        }
        if state != before {
            tx.send_replace(state);
            changed.notify_one();
        }
        if state.failed {
            stop.cancelled().await;
            return;
        }
    }
}
