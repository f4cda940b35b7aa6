//! The last two points of every node and container, and the usage computed from them, with
//! metrics-server's rules: CPU is Δcpu/Δt between the two points (window = Δt); a container
//! whose start time changed (a restart) or whose CPU went backwards starts over; a container
//! that started recently enough gets a synthetic first point at its start time; a node
//! reporting zero CPU or memory, and a pod with any such container, are left out.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::parse::{NodeScrape, Point};

/// Two consecutive points.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Pair {
    last: Point,
    prev: Option<Point>,
}

/// Usage over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// End of the window, ms since the epoch.
    pub timestamp_ms: i64,
    /// Window length, ms.
    pub window_ms: i64,
    /// CPU rate, nanocores.
    pub nano_cores: u64,
    /// Working set at the end, bytes.
    pub memory_bytes: u64,
}

/// (namespace, pod).
type PodKey = (String, String);

/// Everything the server knows; containers are grouped by pod so a pod is found at once.
#[derive(Debug, Default)]
pub struct Storage {
    nodes: HashMap<String, Pair>,
    pods: HashMap<PodKey, BTreeMap<String, Pair>>,
}

/// The youngest a container may be (since its start) to get a synthetic first point.
const SYNTHETIC_MIN_AGE: Duration = Duration::from_secs(10);

fn advance(old: Option<&Pair>, new: Point, synthetic_below: Option<Duration>) -> Pair {
    match old {
        Some(p) if new.timestamp_ms == p.last.timestamp_ms => *p,
        Some(p)
            if new.timestamp_ms > p.last.timestamp_ms
                && new.cpu_nanos >= p.last.cpu_nanos
                && new.start_ms == p.last.start_ms =>
        {
            Pair {
                last: new,
                prev: Some(p.last),
            }
        }
        _ => {
            let age = new.timestamp_ms - new.start_ms;
            let synthetic = synthetic_below.is_some_and(|limit| {
                new.start_ms > 0
                    && age >= SYNTHETIC_MIN_AGE.as_millis() as i64
                    && age < limit.as_millis() as i64
            });
            Pair {
                last: new,
                prev: synthetic.then_some(Point {
                    timestamp_ms: new.start_ms,
                    cpu_nanos: 0,
                    memory_bytes: 0,
                    start_ms: new.start_ms,
                }),
            }
        }
    }
}

fn usage(p: &Pair) -> Option<Usage> {
    let prev = p.prev?;
    let window_ms = p.last.timestamp_ms - prev.timestamp_ms;
    if window_ms <= 0 || p.last.cpu_nanos < prev.cpu_nanos {
        return None;
    }
    Some(Usage {
        timestamp_ms: p.last.timestamp_ms,
        window_ms,
        nano_cores: ((p.last.cpu_nanos - prev.cpu_nanos) as f64 / (window_ms as f64 / 1e3)) as u64,
        memory_bytes: p.last.memory_bytes,
    })
}

impl Storage {
    /// Replace the contents with one scrape round: nodes that were not scraped are dropped
    /// (served without them), the others advance.
    pub fn store(&mut self, round: Vec<(String, NodeScrape)>, resolution: Duration) {
        let mut nodes = HashMap::with_capacity(round.len());
        let mut pods: HashMap<PodKey, BTreeMap<String, Pair>> =
            HashMap::with_capacity(self.pods.len());
        for (name, scrape) in round {
            let n = scrape.node;
            if n.timestamp_ms > 0 && n.cpu_nanos > 0 && n.memory_bytes > 0 {
                nodes.insert(name.clone(), advance(self.nodes.get(&name), n, None));
            }
            // A pod with any container reading zero CPU or memory is left out entirely.
            let mut broken: Vec<(&str, &str)> = Vec::new();
            for ((ns, pod, _), p) in &scrape.containers {
                if p.cpu_nanos == 0 || p.memory_bytes == 0 {
                    broken.push((ns, pod));
                }
            }
            for ((ns, pod, container), p) in &scrape.containers {
                if broken.contains(&(ns.as_str(), pod.as_str())) {
                    continue;
                }
                let key = (ns.clone(), pod.clone());
                let old = self.pods.get(&key).and_then(|c| c.get(container));
                let pair = advance(old, *p, Some(resolution));
                pods.entry(key).or_default().insert(container.clone(), pair);
            }
        }
        self.nodes = nodes;
        self.pods = pods;
    }

    /// A node's usage, once it has two points.
    pub fn node(&self, name: &str) -> Option<Usage> {
        usage(self.nodes.get(name)?)
    }

    /// A pod's containers with their usage; `None` unless every container has one. The pod's
    /// timestamp and window are its earliest container's.
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<Vec<(String, Usage)>> {
        let containers = self.pods.get(&(namespace.to_owned(), pod.to_owned()))?;
        containers
            .iter()
            .map(|(c, pair)| Some((c.clone(), usage(pair)?)))
            .collect()
    }

    /// Points held, by `node` and `container` (for `metrics_server_storage_points`).
    pub fn points(&self) -> (usize, usize) {
        let count = |pairs: &mut dyn Iterator<Item = &Pair>| {
            pairs.map(|p| 1 + usize::from(p.prev.is_some())).sum()
        };
        (
            count(&mut self.nodes.values()),
            count(&mut self.pods.values().flat_map(BTreeMap::values)),
        )
    }

    /// Every (namespace, pod) with stored points.
    pub fn pods(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self.pods.keys().cloned().collect();
        v.sort();
        v
    }

    /// Every node with stored points.
    pub fn nodes(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RES: Duration = Duration::from_secs(15);

    fn point(ts: i64, cpu: u64, mem: u64, start: i64) -> Point {
        Point {
            timestamp_ms: ts,
            cpu_nanos: cpu,
            memory_bytes: mem,
            start_ms: start,
        }
    }

    fn round(
        node_ts: i64,
        node_cpu: u64,
        containers: &[(&str, &str, Point)],
    ) -> Vec<(String, NodeScrape)> {
        vec![(
            "n1".into(),
            NodeScrape {
                node: point(node_ts, node_cpu, 1000, 0),
                containers: containers
                    .iter()
                    .map(|(pod, c, p)| (("default".into(), (*pod).into(), (*c).into()), *p))
                    .collect(),
            },
        )]
    }

    #[test]
    fn rates_need_two_points_and_use_their_timestamps() {
        let mut s = Storage::default();
        s.store(
            round(
                1_000_000,
                5_000_000_000,
                &[("web", "app", point(1_000_000, 1_000_000_000, 64, 1))],
            ),
            RES,
        );
        assert_eq!(s.node("n1"), None);
        assert_eq!(s.pod("default", "web"), None);
        // 15 s later: node used 1.5 s of CPU = 100m; the container 0.75 s = 50m.
        s.store(
            round(
                1_015_000,
                6_500_000_000,
                &[("web", "app", point(1_015_000, 1_750_000_000, 128, 1))],
            ),
            RES,
        );
        let n = s.node("n1").unwrap();
        assert_eq!(
            (n.nano_cores, n.window_ms, n.timestamp_ms),
            (100_000_000, 15_000, 1_015_000)
        );
        let pod = s.pod("default", "web").unwrap();
        assert_eq!(pod[0].0, "app");
        assert_eq!(pod[0].1.nano_cores, 50_000_000);
        assert_eq!(pod[0].1.memory_bytes, 128);
        assert_eq!(s.points(), (2, 2));
    }

    #[test]
    fn a_restart_drops_the_previous_point() {
        let mut s = Storage::default();
        s.store(
            round(
                1_000_000,
                5,
                &[("web", "app", point(1_000_000, 9_000_000_000, 64, 1))],
            ),
            RES,
        );
        s.store(
            round(
                1_015_000,
                6,
                &[("web", "app", point(1_015_000, 10_000_000_000, 64, 1))],
            ),
            RES,
        );
        assert!(s.pod("default", "web").is_some());
        // New start time, CPU back near zero: no rate until the next point.
        s.store(
            round(
                1_030_000,
                7,
                &[("web", "app", point(1_030_000, 100_000_000, 64, 1_029_000))],
            ),
            RES,
        );
        assert_eq!(s.pod("default", "web"), None);
        s.store(
            round(
                1_045_000,
                8,
                &[("web", "app", point(1_045_000, 400_000_000, 64, 1_029_000))],
            ),
            RES,
        );
        assert_eq!(s.pod("default", "web").unwrap()[0].1.nano_cores, 20_000_000);
    }

    #[test]
    fn young_containers_get_a_synthetic_first_point() {
        let mut s = Storage::default();
        // Started 12 s before the sample (10 s ≤ age < 15 s resolution): served at once.
        s.store(
            round(
                1_012_000,
                5,
                &[("web", "app", point(1_012_000, 1_200_000_000, 64, 1_000_000))],
            ),
            RES,
        );
        let u = s.pod("default", "web").unwrap()[0].1;
        assert_eq!((u.nano_cores, u.window_ms), (100_000_000, 12_000));
    }

    #[test]
    fn zero_readings_and_unscraped_nodes_are_left_out() {
        let mut s = Storage::default();
        let r = round(
            1_000_000,
            5,
            &[
                ("web", "app", point(1_000_000, 1, 64, 1)),
                ("web", "sidecar", point(1_000_000, 0, 64, 1)),
                ("db", "app", point(1_000_000, 1, 64, 1)),
            ],
        );
        s.store(r, RES);
        assert_eq!(s.pods(), vec![("default".into(), "db".into())]);
        s.store(Vec::new(), RES);
        assert!(s.nodes().is_empty() && s.pods().is_empty());
        s.store(round(1_000_000, 0, &[]), RES);
        assert!(s.nodes().is_empty());
    }
}
