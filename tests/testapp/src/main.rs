//! `skiff-testapp`: the test workload of Skiff's end-to-end tests and benchmarks.
//!
//! ```text
//! skiff-testapp serve [--port 8080] [--log-every-ms N] [--term-delay-ms N]
//!     GET /healthz  /ready        200, or 500 once failed with /fail?probe=liveness|readiness
//!     GET /burn?millis=N          burn CPU for N ms
//!     GET /load?millicores=N&seconds=S  burn N millicores in the background for S seconds
//!     GET /alloc?mb=N             allocate and touch N MiB (kept)
//!     GET /log?n=N                print N lines
//!     GET /exit?code=N            exit with code N
//!     GET /env                    the environment
//! skiff-testapp exit [--code N] [--after-ms N] [--message TEXT]
//! skiff-testapp alloc --mb N      allocate and touch memory, then sleep
//! skiff-testapp log --count N [--every-ms M] [--text T]
//! skiff-testapp client URL        GET a URL, print the body, exit 0 on 2xx
//! skiff-testapp cat PATH          print a file
//! skiff-testapp write PATH TEXT   write a file
//! skiff-testapp sleep [--term-delay-ms N]
//! ```
//! The server binds `$POD_IP` when set (the process runtime gives each pod its own loopback
//! address), else 0.0.0.0. SIGTERM prints `got SIGTERM` and exits 0 after `--term-delay-ms`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(args: &[String], name: &str, default: u64) -> u64 {
    flag(args, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Block SIGTERM/SIGINT in every thread, and handle them on one: print, wait, exit.
fn handle_term(delay: Duration) {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        if set.wait().is_ok() {
            println!("got SIGTERM");
            let _ = std::io::stdout().flush();
            std::thread::sleep(delay);
            std::process::exit(0);
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("serve");
    match command {
        "serve" => serve(&args),
        "exit" => {
            if let Some(m) = flag(&args, "--message") {
                println!("{m}");
            }
            std::thread::sleep(Duration::from_millis(num(&args, "--after-ms", 0)));
            std::process::exit(num(&args, "--code", 0) as i32);
        }
        "alloc" => {
            let mb = num(&args, "--mb", 64) as usize;
            let mut hold = Vec::new();
            for i in 0..mb {
                hold.push(vec![(i % 251) as u8; 1024 * 1024]);
                println!("allocated {} MiB", i + 1);
            }
            loop {
                std::thread::sleep(Duration::from_secs(3600));
                println!("{}", hold.len());
            }
        }
        "log" => {
            let count = num(&args, "--count", 10);
            let every = num(&args, "--every-ms", 0);
            let text = flag(&args, "--text").unwrap_or_else(|| "line".into());
            for i in 0..count {
                println!("{text} {i}");
                if every > 0 {
                    std::thread::sleep(Duration::from_millis(every));
                }
            }
        }
        "client" => {
            let url = args.get(1).cloned().unwrap_or_default();
            match get(&url) {
                Ok((status, body)) => {
                    print!("{body}");
                    std::process::exit(if (200..300).contains(&status) { 0 } else { 1 });
                }
                Err(e) => {
                    eprintln!("client: {e}");
                    std::process::exit(2);
                }
            }
        }
        "cat" => match std::fs::read_to_string(args.get(1).cloned().unwrap_or_default()) {
            Ok(t) => print!("{t}"),
            Err(e) => {
                eprintln!("cat: {e}");
                std::process::exit(1);
            }
        },
        "write" => {
            if let Err(e) = std::fs::write(
                args.get(1).cloned().unwrap_or_default(),
                args.get(2).cloned().unwrap_or_default(),
            ) {
                eprintln!("write: {e}");
                std::process::exit(1);
            }
        }
        "sleep" => {
            handle_term(Duration::from_millis(num(&args, "--term-delay-ms", 0)));
            println!("sleeping");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(64);
        }
    }
}

fn get(url: &str) -> std::io::Result<(u16, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

struct State {
    live: AtomicBool,
    ready: AtomicBool,
    held: Mutex<Vec<Vec<u8>>>,
}

fn serve(args: &[String]) {
    handle_term(Duration::from_millis(num(args, "--term-delay-ms", 0)));
    let port = num(args, "--port", 8080);
    let host = std::env::var("POD_IP")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "0.0.0.0".into());
    let listener = match TcpListener::bind((host.as_str(), port as u16)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("binding {host}:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("serving on {host}:{port}");
    let every = num(args, "--log-every-ms", 0);
    if every > 0 {
        std::thread::spawn(move || {
            let mut i = 0u64;
            loop {
                println!("tick {i}");
                i += 1;
                std::thread::sleep(Duration::from_millis(every));
            }
        });
    }
    let state = Arc::new(State {
        live: AtomicBool::new(true),
        ready: AtomicBool::new(true),
        held: Mutex::new(Vec::new()),
    });
    for conn in listener.incoming().flatten() {
        let state = state.clone();
        std::thread::spawn(move || {
            let _ = handle(conn, &state);
        });
    }
}

fn query(path: &str, key: &str) -> Option<String> {
    path.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

fn handle(mut conn: TcpStream, state: &State) -> std::io::Result<()> {
    let mut line = String::new();
    let mut reader = BufReader::new(conn.try_clone()?);
    reader.read_line(&mut line)?;
    // Read the headers too: closing with unread input makes the kernel reset the connection.
    let mut header = String::new();
    while reader.read_line(&mut header)? > 0 && header.trim_end() != "" {
        header.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let route = path.split('?').next().unwrap_or("/");
    let (code, body) = match route {
        "/healthz" if state.live.load(Ordering::SeqCst) => (200, "ok".to_owned()),
        "/healthz" => (500, "liveness failing".to_owned()),
        "/ready" if state.ready.load(Ordering::SeqCst) => (200, "ready".to_owned()),
        "/ready" => (500, "not ready".to_owned()),
        "/fail" => {
            match query(&path, "probe").as_deref() {
                Some("liveness") => state.live.store(false, Ordering::SeqCst),
                Some("readiness") => state.ready.store(false, Ordering::SeqCst),
                _ => {}
            }
            (200, "failing".to_owned())
        }
        "/recover" => {
            state.live.store(true, Ordering::SeqCst);
            state.ready.store(true, Ordering::SeqCst);
            (200, "recovered".to_owned())
        }
        "/burn" => {
            let millis: u64 = query(&path, "millis")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            let until = Instant::now() + Duration::from_millis(millis);
            let mut x = 0u64;
            while Instant::now() < until {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            (200, format!("burned {millis}ms ({x})"))
        }
        "/load" => {
            // A bounded background load: `millicores` of CPU for `seconds`, as a duty cycle of
            // busy and idle slices of 10 ms (the load generator of the autoscaling tests).
            let millicores: u64 = query(&path, "millicores")
                .and_then(|m| m.parse().ok())
                .unwrap_or(500)
                .min(1000);
            let seconds: u64 = query(&path, "seconds")
                .and_then(|m| m.parse().ok())
                .unwrap_or(30)
                .min(600);
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(seconds);
                let busy = Duration::from_micros(millicores * 10);
                let idle = Duration::from_millis(10).saturating_sub(busy);
                let mut x = 0u64;
                while Instant::now() < until {
                    let slice = Instant::now() + busy;
                    while Instant::now() < slice {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    }
                    std::thread::sleep(idle);
                }
                std::hint::black_box(x);
            });
            (200, format!("loading {millicores}m for {seconds}s"))
        }
        "/alloc" => {
            let mb: usize = query(&path, "mb")
                .and_then(|m| m.parse().ok())
                .unwrap_or(16);
            let mut held = state.held.lock().expect("held lock");
            for i in 0..mb {
                held.push(vec![(i % 251) as u8; 1024 * 1024]);
            }
            (200, format!("holding {} MiB", held.len()))
        }
        "/log" => {
            let n: u64 = query(&path, "n").and_then(|m| m.parse().ok()).unwrap_or(1);
            for i in 0..n {
                println!("requested line {i}");
            }
            (200, format!("logged {n}"))
        }
        "/exit" => {
            let code: i32 = query(&path, "code")
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            println!("exiting with {code}");
            let _ = std::io::stdout().flush();
            std::process::exit(code);
        }
        "/env" => (
            200,
            std::env::vars()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect(),
        ),
        _ => (404, "not found".to_owned()),
    };
    conn.write_all(
        format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )?;
    // Half-close and drain, so the close never resets a client still sending.
    conn.shutdown(std::net::Shutdown::Write)?;
    conn.set_read_timeout(Some(Duration::from_secs(1)))?;
    let mut sink = [0u8; 1024];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}
