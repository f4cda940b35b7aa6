//! Every write that got a 2xx survives `kill -9` of skiffd.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_e2e::{Cluster, http};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut cluster = Cluster::start().expect("skiffd starts");
    let addr = cluster.insecure_addr.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (addr, stop, acked) = (addr.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("w{w}-{i}");
                    let body =
                        format!(r#"{{"metadata":{{"name":"{name}"}},"data":{{"i":"{i}"}}}}"#);
                    match http(
                        &addr,
                        "POST",
                        "/api/v1/namespaces/default/configmaps",
                        Some("application/json"),
                        body.as_bytes(),
                    ) {
                        Ok(r) if r.status == 201 => {
                            acked.lock().unwrap().insert(name);
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} writes acknowledged before the kill",
        acked.len()
    );

    cluster
        .relaunch()
        .expect("skiffd restarts on the same data dir");
    let list = cluster
        .http("GET", "/api/v1/namespaces/default/configmaps", None, b"")
        .unwrap()
        .json();
    let stored: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<&String> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    // Revisions keep increasing after the restart.
    let max_rv: i64 = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["resourceVersion"].as_str()?.parse().ok())
        .max()
        .unwrap();
    let created = cluster
        .http(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some("application/json"),
            br#"{"metadata":{"name":"after"}}"#,
        )
        .unwrap()
        .json();
    let rv: i64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rv > max_rv,
        "revision {rv} after restart must exceed {max_rv}"
    );
    println!(
        "{} acknowledged writes, all present after kill -9",
        acked.len()
    );
}
