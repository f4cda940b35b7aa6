//! `GET /containerLogs/{namespace}/{pod}/{container}`: what `kubectl logs` shows, read from the
//! CRI files with `follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`
//! and `limitBytes`.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Ctx;
use crate::logs::reader::{Assembler, LogLine, lines, render};
use crate::pods::status::instances;
use crate::runtime::ContainerState;

fn bad(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

struct Options {
    follow: bool,
    tail: Option<usize>,
    since: Option<Timestamp>,
    timestamps: bool,
    previous: bool,
    limit: Option<usize>,
}

fn options(query: Option<&str>) -> Options {
    let mut o = Options {
        follow: false,
        tail: None,
        since: None,
        timestamps: false,
        previous: false,
        limit: None,
    };
    for (k, v) in form_urlencoded_pairs(query.unwrap_or_default()) {
        match k.as_str() {
            "follow" => o.follow = v == "true" || v == "1",
            "tailLines" => o.tail = v.parse().ok(),
            "sinceSeconds" => {
                o.since = v.parse::<i64>().ok().and_then(|s| {
                    Timestamp::now()
                        .checked_sub(jiff::SignedDuration::from_secs(s))
                        .ok()
                })
            }
            "sinceTime" => o.since = v.parse().ok(),
            "timestamps" => o.timestamps = v == "true" || v == "1",
            "previous" => o.previous = v == "true" || v == "1",
            "limitBytes" => o.limit = v.parse().ok(),
            _ => {}
        }
    }
    o
}

/// Query pairs, decoded (`+` is a space).
pub(crate) fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) async fn container_logs(
    State(ctx): State<Arc<Ctx>>,
    Path((namespace, pod_name, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let opts = options(query.as_deref());
    let Some(pod) = ctx.find_pod(&namespace, &pod_name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod \"{pod_name}\" not found"),
        )
            .into_response();
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == container);
    if !init && !spec.containers.iter().any(|c| c.name == container) {
        return bad(format!(
            "container {container} is not valid for pod {pod_name}"
        ));
    }
    let all = match ctx.runtime.pod_containers(&uid).await {
        Ok(a) => a,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let (latest, previous) = instances(&all, &container, init);
    let target = if opts.previous {
        match previous {
            Some(p) => p.clone(),
            None => {
                return bad(format!(
                    "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
                ));
            }
        }
    } else {
        match latest {
            Some(l) => l.clone(),
            None => {
                return bad(format!(
                    "container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"
                ));
            }
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let follow = opts.follow && !opts.previous;
    tokio::spawn(async move {
        let _ = stream_file(&ctx, &uid, &target.id, &target.log_path, opts, follow, &tx).await;
    });
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn stream_file(
    ctx: &Arc<Ctx>,
    pod_uid: &str,
    container_id: &str,
    path: &std::path::Path,
    opts: Options,
    follow: bool,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ()> {
    let mut sent = 0usize;
    let mut send = |line: &LogLine| -> Option<Bytes> {
        if opts.since.is_some_and(|s| line.at < s) {
            return None;
        }
        let mut bytes = render(line, opts.timestamps);
        if let Some(limit) = opts.limit {
            if sent >= limit {
                return None;
            }
            bytes.truncate(limit - sent);
        }
        sent += bytes.len();
        Some(Bytes::from(bytes))
    };
    let mut file = std::fs::File::open(path).map_err(|_| ())?;
    let mut contents = Vec::new();
    file.read_to_end(&mut contents).map_err(|_| ())?;
    // Keep an unfinished last record for the follow loop.
    let cut = contents
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let mut carry = contents.split_off(cut);
    let all = lines(&contents);
    let start = opts.tail.map_or(0, |t| all.len().saturating_sub(t));
    for line in &all[start..] {
        if let Some(b) = send(line) {
            tx.send(Ok(b)).await.map_err(|_| ())?;
        }
    }
    if !follow {
        return Ok(());
    }
    let mut position = cut as u64 + carry.len() as u64;
    let mut assembler = Assembler::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|_| ())?;
        if n > 0 {
            position += n as u64;
            carry.extend_from_slice(&buf[..n]);
            while let Some(i) = carry.iter().position(|b| *b == b'\n') {
                let record: Vec<u8> = carry.drain(..=i).collect();
                if let Some(line) = assembler.push(&record[..record.len() - 1])
                    && let Some(b) = send(&line)
                {
                    tx.send(Ok(b)).await.map_err(|_| ())?;
                }
            }
            continue;
        }
        // Rotated: the path now names a new, shorter file.
        if std::fs::metadata(path).is_ok_and(|m| m.len() < position) {
            file = std::fs::File::open(path).map_err(|_| ())?;
            file.seek(SeekFrom::Start(0)).map_err(|_| ())?;
            position = 0;
            continue;
        }
        let running = ctx
            .runtime
            .pod_containers(pod_uid)
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|c| c.id == container_id))
            .is_some_and(|c| matches!(c.state, ContainerState::Running { .. }));
        if !running {
            return Ok(());
        }
        tokio::select! {
            _ = tx.closed() => return Err(()),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
