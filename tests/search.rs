//! `skiffd search` as a process: lines acknowledged before a kill -9 are all searchable after a
//! restart, exactly once even when the sender re-sends what it was not sure about; beyond
//! loopback it takes only bearer tokens the cluster accepts.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_e2e::{Cluster, Daemon, bin_dir, wait_for};

/// The address the service logged last (it binds port 0; a restart gets a new one).
fn address(daemon: &Daemon, starts: usize) -> Option<String> {
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("log search serving"))
        .collect();
    if lines.len() < starts {
        return None;
    }
    let line = lines.last()?;
    let at = line.find("addr=")? + "addr=".len();
    Some(line[at..].split_whitespace().next()?.to_owned())
}

/// One HTTP/1.1 request; the status and body, or an error if the server is gone.
fn request(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    request_as(addr, method, path, body, None)
}

/// A request with a bearer token.
fn request_as(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
    token: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {text:?}")))?;
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok((status, body))
}

fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = request(addr, "GET", path, b"").unwrap();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A batch of `n` lines from writer `w` starting at line `first`, keyed by writer and offset.
fn batch(base_ts: i64, w: usize, first: u64, n: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for i in first..first + n {
        let line = json!({
            "ts": base_ts + (i as i64) * 1000 + w as i64,
            "message": format!("writer-{w} line-{i} payload"),
            "namespace": "load", "pod": format!("writer-{w}"), "container": "c",
            "source": format!("writer-{w}"), "offset": i,
        });
        serde_json::to_writer(&mut body, &line).unwrap();
        body.push(b'\n');
    }
    body
}

#[test]
fn acknowledged_lines_survive_kill_9_exactly_once() {
    let started = std::time::Instant::now();
    let args: Vec<String> = [
        "--bind-address",
        "127.0.0.1:0",
        "--commit-interval",
        "300ms",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let data_dir = tempfile::tempdir().unwrap();
    let mut full_args = vec![
        "--data-dir".to_owned(),
        data_dir.path().display().to_string(),
    ];
    full_args.extend(args);
    let mut daemon = Daemon::start("search", &full_args);
    let addr = wait_for(Duration::from_secs(30), "search listening", || {
        address(&daemon, 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));

    let base_ts = jiff::Timestamp::now().as_nanosecond() as i64 - 60_000_000_000;
    const BATCH: u64 = 200;
    let stop = Arc::new(AtomicBool::new(false));
    // Per writer: the lines acknowledged, and the first line not acknowledged.
    let acked: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (addr, stop, acked) = (addr.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut next = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match request(
                        &addr,
                        "POST",
                        "/api/v1/ingest",
                        &batch(base_ts, w, next, BATCH),
                    ) {
                        Ok((200, _)) => {
                            next += BATCH;
                            acked.lock().unwrap().insert(w, next);
                        }
                        Ok((429, _)) => std::thread::sleep(Duration::from_millis(50)),
                        Ok((status, body)) => {
                            panic!(
                                "ingest answered {status}: {}",
                                String::from_utf8_lossy(&body)
                            )
                        }
                        Err(_) => break,
                    }
                }
                next
            })
        })
        .collect();
    // Let batches be written, committed and some still in flight, then crash.
    wait_for(Duration::from_secs(30), "some batches acknowledged", || {
        let a = acked.lock().unwrap();
        (a.len() == 3 && a.values().all(|n| *n >= 5 * BATCH)).then_some(())
    })
    .unwrap();
    eprintln!("{:?} crashing", started.elapsed());
    daemon.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    daemon.launch();
    let addr = wait_for(Duration::from_secs(60), "search listening again", || {
        address(&daemon, 2)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    // A collector re-sends from its last checkpoint: here the last two acknowledged batches
    // and one more. The acknowledged ones are duplicates; the next one may be too (stored, but
    // the answer was lost in the crash).
    let mut expected_total = 0;
    for (w, end) in &acked {
        let from = end - 2 * BATCH;
        let (status, body) = request(
            &addr,
            "POST",
            "/api/v1/ingest",
            &batch(base_ts, *w, from, 3 * BATCH),
        )
        .unwrap();
        assert_eq!(status, 200);
        let out: Value = serde_json::from_slice(&body).unwrap();
        let (accepted, duplicates) = (
            out["accepted"].as_u64().unwrap(),
            out["duplicates"].as_u64().unwrap(),
        );
        assert_eq!(accepted + duplicates, 3 * BATCH, "{out}");
        assert!(accepted == BATCH || accepted == 0, "{out}");
        expected_total += end + BATCH;
    }

    let range = format!("start={}&end={}", base_ts, base_ts + 3_600_000_000_000);
    wait_for(Duration::from_secs(30), "every line searchable", || {
        let v = get_json(&addr, &format!("/api/v1/search?{range}&limit=1"));
        (v["total"].as_u64() == Some(expected_total)).then_some(())
    })
    .unwrap_or_else(|e| {
        let v = get_json(&addr, &format!("/api/v1/search?{range}&limit=1"));
        panic!(
            "{e}: total {} of {expected_total}\n{}",
            v["total"],
            daemon.log()
        )
    });
    eprintln!("{:?} all searchable", started.elapsed());
    // Every line exactly once.
    let mut seen = HashSet::new();
    let mut cursor = String::new();
    loop {
        let v = get_json(
            &addr,
            &format!("/api/v1/search?{range}&limit=5000&order=asc&cursor={cursor}"),
        );
        for h in v["hits"].as_array().unwrap() {
            let m = h["message"].as_str().unwrap().to_owned();
            assert!(seen.insert(m.clone()), "{m} stored twice");
        }
        match v["cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    for (w, end) in &acked {
        for i in 0..end + BATCH {
            assert!(
                seen.contains(&format!("writer-{w} line-{i} payload")),
                "writer {w} line {i} lost"
            );
        }
    }
    assert_eq!(seen.len() as u64, expected_total);

    // A clean stop commits everything; the next start finds it all without replaying.
    daemon.stop();
    daemon.launch();
    let addr = wait_for(
        Duration::from_secs(60),
        "search listening a third time",
        || address(&daemon, 3),
    )
    .unwrap();
    let v = get_json(&addr, &format!("/api/v1/search?{range}&limit=1"));
    assert_eq!(v["total"].as_u64(), Some(expected_total));
    let metrics = request(&addr, "GET", "/metrics", b"").unwrap();
    let text = String::from_utf8_lossy(&metrics.1);
    assert!(
        text.contains("skiff_search_index_documents{index=\"logs-"),
        "{text}"
    );
}

#[test]
fn beyond_loopback_only_cluster_tokens_get_in() {
    let data = tempfile::tempdir().unwrap();
    // Refused outright without a cluster to check tokens with.
    let out = std::process::Command::new(bin_dir().join("skiffd"))
        .args(["search", "--data-dir"])
        .arg(data.path())
        .args(["--bind-address", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("--auth-kubeconfig"), "{text}");

    let tokens = data.path().join("tokens.csv");
    std::fs::write(&tokens, "admin-token,admin,1,\"system:masters\"\n").unwrap();
    let cluster =
        Cluster::start_with(&["--token-auth-file", tokens.to_str().unwrap()]).expect("skiffd");
    let out = std::process::Command::new(bin_dir().join("skiffd"))
        .args(["token", "create", "--data-dir"])
        .arg(cluster.dir.path())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let bootstrap = printed
        .split_whitespace()
        .find(|w| w.len() == 23 && w.as_bytes()[6] == b'.')
        .unwrap_or_else(|| panic!("no token in {printed:?}"))
        .to_owned();

    let args: Vec<String> = vec![
        "--data-dir".into(),
        data.path().join("search").display().to_string(),
        "--bind-address".into(),
        "127.0.0.1:0".into(),
        "--auth-kubeconfig".into(),
        cluster.kubeconfig.display().to_string(),
    ];
    let daemon = Daemon::start("search", &args);
    let addr = wait_for(Duration::from_secs(30), "search listening", || {
        address(&daemon, 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()));
    let status =
        |path: &str, token: Option<&str>| request_as(&addr, "GET", path, b"", token).unwrap().0;
    assert_eq!(status("/ready", None), 200, "health checks stay open");
    assert_eq!(status("/api/v1/search?query=x", None), 401);
    assert_eq!(status("/loki/api/v1/labels", Some("not-a-token")), 401);
    assert_eq!(status("/loki/api/v1/labels", Some("admin-token")), 200);
    assert_eq!(status("/api/v1/search?query=x", Some("admin-token")), 200);
    let (code, _) = request_as(
        &addr,
        "POST",
        "/api/v1/ingest",
        br#"{"ts": 1, "message": "m", "namespace": "n"}"#,
        Some("admin-token"),
    )
    .unwrap();
    assert_eq!(code, 200);
    // A bootstrap token authenticates, but may only ask for certificates.
    assert_eq!(status("/api/v1/search?query=x", Some(&bootstrap)), 403);

    // On every address with --trust-loopback (as `skiffd up --search-bind-address 0.0.0.0`
    // runs it): loopback callers need no token, callers at another address still do.
    let args: Vec<String> = vec![
        "--data-dir".into(),
        data.path().join("search-all").display().to_string(),
        "--bind-address".into(),
        "0.0.0.0:0".into(),
        "--auth-kubeconfig".into(),
        cluster.kubeconfig.display().to_string(),
        "--trust-loopback".into(),
    ];
    let daemon = Daemon::start("search", &args);
    let port = wait_for(Duration::from_secs(30), "search listening", || {
        address(&daemon, 1)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log()))
    .rsplit(':')
    .next()
    .unwrap()
    .to_owned();
    let loopback = format!("127.0.0.1:{port}");
    let status = |addr: &str, token: Option<&str>| {
        request_as(addr, "GET", "/api/v1/search?query=x", b"", token)
            .unwrap()
            .0
    };
    assert_eq!(status(&loopback, None), 200);
    let outside = skiff_agent::detect_node_ip();
    if outside
        .parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| !ip.is_loopback())
    {
        let outside = format!("{outside}:{port}");
        assert_eq!(status(&outside, None), 401);
        assert_eq!(status(&outside, Some("admin-token")), 200);
    } else {
        eprintln!("this machine has no non-loopback IPv4 address: the remote half is not checked");
    }
}
