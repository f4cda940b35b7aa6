//! `GET /exec/{namespace}/{pod}/{container}?command=…&stdin=…&tty=…` upgraded to a websocket
//! speaking `v5.channel.k8s.io` (also v4): binary messages prefixed by a channel byte — 0 stdin,
//! 1 stdout, 2 stderr, 3 status (a `metav1.Status` at the end), 4 resize, 255 close. kubectl
//! maps a `NonZeroExitCode` status to its own exit code.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::logs::form_urlencoded_pairs;
use crate::Ctx;
use crate::pods::status::instances;
use crate::runtime::{ContainerState, ExecChunk};

const PROTOCOLS: [&str; 4] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "channel.k8s.io",
];

pub(crate) async fn exec(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod_name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let pairs = form_urlencoded_pairs(query.as_deref().unwrap_or_default());
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let flag = |name: &str| {
        pairs
            .iter()
            .any(|(k, v)| k == name && (v == "true" || v == "1"))
    };
    let (stdin, tty) = (flag("stdin"), flag("tty"));
    if command.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 command",
        )
            .into_response();
    }
    let Some(pod) = ctx.find_pod(&namespace, &pod_name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod \"{pod_name}\" not found"),
        )
            .into_response();
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let all = ctx.runtime.pod_containers(&uid).await.unwrap_or_default();
    let (latest, _) = instances(&all, &container, false);
    let Some(target) = latest
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .cloned()
    else {
        return (
            StatusCode::BAD_REQUEST,
            format!("container {container} is not running"),
        )
            .into_response();
    };
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let v5 = socket.protocol().and_then(|p| p.to_str().ok()) == Some("v5.channel.k8s.io");
            if let Err(e) = relay(ctx, socket, target.id, command, stdin, tty, v5).await {
                tracing::debug!(error = %e, "exec session ended with an error");
            }
        })
}

/// A normal closure (1000): Go's websocket client treats anything else, even a close without a
/// code, as an error on the streams.
async fn close(sink: &mut futures::stream::SplitSink<WebSocket, Message>) {
    let frame = axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel);
    frame.extend_from_slice(data);
    Message::Binary(frame.into())
}

async fn relay(
    ctx: Arc<Ctx>,
    socket: WebSocket,
    id: String,
    command: Vec<String>,
    stdin: bool,
    tty: bool,
    v5: bool,
) -> anyhow::Result<()> {
    let (mut sink, mut incoming) = socket.split();
    let session = match ctx.runtime.exec(&id, command.clone(), tty, stdin).await {
        Ok(s) => s,
        Err(e) => {
            let status = json!({"metadata": {}, "status": "Failure", "message": e.to_string(), "reason": "InternalError",
                "details": {"causes": [{"message": e.to_string()}]}, "code": 500});
            sink.send(framed(3, status.to_string().as_bytes())).await?;
            close(&mut sink).await;
            return Ok(());
        }
    };
    let mut input = session.stdin;
    let resize = session.resize;
    let input_task = tokio::spawn(async move {
        while let Some(Ok(msg)) = incoming.next().await {
            let Message::Binary(data) = msg else {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                continue;
            };
            match data.first() {
                Some(0) => {
                    if let Some(w) = input.as_mut()
                        && w.write_all(&data[1..]).await.is_err()
                    {
                        input = None;
                    }
                }
                Some(4) => {
                    if let (Some(r), Ok(size)) = (
                        &resize,
                        serde_json::from_slice::<serde_json::Value>(&data[1..]),
                    ) {
                        r(
                            size["Width"].as_u64().unwrap_or(80) as u16,
                            size["Height"].as_u64().unwrap_or(24) as u16,
                        );
                    }
                }
                // v5: [255, channel] closes that channel; closing stdin ends the input.
                Some(255) if v5 && data.get(1) == Some(&0) => {
                    if let Some(mut w) = input.take() {
                        let _ = w.shutdown().await;
                    }
                }
                _ => {}
            }
        }
    });
    let mut output = session.output;
    while let Some(chunk) = output.next().await {
        let msg = match chunk? {
            ExecChunk::Stdout(b) => framed(1, &b),
            ExecChunk::Stderr(b) if tty => framed(1, &b),
            ExecChunk::Stderr(b) => framed(2, &b),
        };
        sink.send(msg).await?;
    }
    let code = session.exit_code.await.unwrap_or(-1);
    let status = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    sink.send(framed(3, status.to_string().as_bytes())).await?;
    close(&mut sink).await;
    input_task.abort();
    Ok(())
}
