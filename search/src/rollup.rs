//! Rollups: per segment, the lines and message bytes of each minute and each combination of
//! some labels' values, counted once and kept in memory.
//!
//! A 24 h histogram at 100 M lines a day otherwise reads every line's timestamp and labels
//! (1.4 s on two cores); summed from rollups it visits a few thousand entries. Segments never
//! change (a merge writes a new one), so a rollup holds for its segment's life. A background
//! thread builds them for big segments and for the label sets queries ask for; a query counts
//! line by line the segments that have none yet (fresh and small ones, or one just merged).
//!
//! Buckets line up with minutes in both conventions of the service: the histogram's
//! `[t, t + step)` and LogQL's windows `(t - range, t]`, which start 1 ns after a minute.
//! For that each minute keeps apart the lines stamped on its very first nanosecond.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tantivy::collector::Collector;
use tantivy::index::SegmentId;
use tantivy::query::EnableScoring;
use tantivy::{DateTime, DocId, Searcher, SegmentReader};

use crate::counts::{GroupKeys, GroupedCounts, Groups, add_groups};
use crate::metrics::Metrics;
use crate::query::{Compiled, Filters, Matcher, QueryError};
use crate::store::Store;

pub const MINUTE: i64 = 60_000_000_000;
/// Segments with fewer lines are counted line by line: that is quick, and they are soon
/// merged into bigger ones.
pub const MIN_DOCS: u32 = 100_000;
/// A rollup is kept only if it has at most one entry per this many lines; past that, counting
/// line by line costs about as much as summing it.
const MIN_LINES_PER_ENTRY: usize = 8;
/// Most entries kept, all rollups together (32 bytes each: 256 MiB).
const MAX_ENTRIES: usize = 8 << 20;
/// Label sets rolled up for new segments: those queries asked for this recently, and `level`
/// (the histogram's usual split) from the start.
const WANTED_FOR: Duration = Duration::from_secs(24 * 3600);
const ALWAYS_WANTED: &[&[&str]] = &[&[], &["level"]];
/// Pause between two rounds of the builder.
const ROUND: Duration = Duration::from_secs(2);

/// The lines of one minute and one group.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Minutes since the epoch.
    minute: u32,
    group: u32,
    lines: u32,
    /// Of `lines`, those stamped on the minute's first nanosecond.
    edge_lines: u32,
    bytes: u64,
    edge_bytes: u64,
}

/// One segment's counts per minute and per combination of values of a set of labels.
#[derive(Debug)]
pub struct Rollup {
    /// Per group, the labels' values (`None`: the line has none).
    groups: Vec<Vec<Option<String>>>,
    entries: Vec<Entry>,
}

impl Rollup {
    /// Counts `segment`'s live lines, or `None` when a rollup would not be much smaller than
    /// the segment (many distinct values per minute) or a line's time is beyond its reach.
    pub fn build(segment: &SegmentReader, set: &[String]) -> tantivy::Result<Option<Rollup>> {
        let ff = segment.fast_fields();
        let ts = ff.date("ts")?;
        let size = ff.u64("size")?;
        let mut keys = GroupKeys::new(segment, set)?;
        let most = (segment.num_docs() as usize / MIN_LINES_PER_ENTRY).max(1);
        let mut index: FxHashMap<(u32, u32), usize> = FxHashMap::default();
        let mut entries: Vec<Entry> = Vec::new();
        let mut docs: Vec<DocId> = Vec::with_capacity(BLOCK);
        let (mut ts_block, mut size_block) = (Vec::new(), Vec::new());
        let mut alive = segment.doc_ids_alive();
        loop {
            docs.clear();
            docs.extend(alive.by_ref().take(BLOCK));
            if docs.is_empty() {
                break;
            }
            ts_block.clear();
            ts_block.resize(docs.len(), None::<DateTime>);
            ts.first_vals(&docs, &mut ts_block);
            size_block.clear();
            size_block.resize(docs.len(), None::<u64>);
            size.first_vals(&docs, &mut size_block);
            keys.load(&docs);
            for i in 0..docs.len() {
                let Some(t) = ts_block[i] else { continue };
                let t = t.into_timestamp_nanos();
                let Ok(minute) = u32::try_from(t.div_euclid(MINUTE)) else {
                    return Ok(None);
                };
                let edge = t.rem_euclid(MINUTE) == 0;
                let bytes = size_block[i].unwrap_or(0);
                let group = keys.group(i).0 as u32;
                let next = entries.len();
                let at = *index.entry((minute, group)).or_insert(next);
                if at == next {
                    if next >= most {
                        return Ok(None);
                    }
                    entries.push(Entry {
                        minute,
                        group,
                        lines: 0,
                        edge_lines: 0,
                        bytes: 0,
                        edge_bytes: 0,
                    });
                }
                let e = &mut entries[at];
                e.lines += 1;
                e.bytes += bytes;
                if edge {
                    e.edge_lines += 1;
                    e.edge_bytes += bytes;
                }
            }
        }
        Ok(Some(Rollup {
            groups: keys.values(),
            entries,
        }))
    }

    /// Adds the counts of the groups that pass `plan`'s label tests into `out`, bucketed and
    /// grouped as `plan.spec` asks.
    /// With `whole`, every line counts (the segment is inside the range); else the lines in
    /// `plan`'s whole minutes.
    fn add_to(&self, plan: &Plan, whole: bool, out: &mut Groups) {
        let spec = plan.spec;
        // Per group of the rollup, its slot in `counts` (None: filtered out).
        let mut slots: HashMap<Vec<Option<String>>, usize> = HashMap::new();
        let mut counts: Vec<Vec<f64>> = Vec::new();
        let mut keys: Vec<Vec<Option<String>>> = Vec::new();
        let slot_of: Vec<Option<usize>> = (self.groups.iter())
            .map(|values| {
                let pass = (plan.tests.iter()).all(|(i, test)| test.accepts(values[*i].as_deref()));
                pass.then(|| {
                    let key: Vec<Option<String>> =
                        plan.project.iter().map(|i| values[*i].clone()).collect();
                    *slots.entry(key.clone()).or_insert_with(|| {
                        counts.push(vec![0.0; spec.buckets]);
                        keys.push(key);
                        counts.len() - 1
                    })
                })
            })
            .collect();
        let mut add = |slot: usize, t: i64, lines: u32, bytes: u64| {
            if lines == 0 || (!whole && (t < plan.lo || t >= plan.hi)) {
                return;
            }
            // One bucket holds the whole range, whatever minute its ends cut.
            let bucket = if spec.buckets == 1 {
                0
            } else {
                (t - spec.start).div_euclid(spec.step)
            };
            if bucket < 0 || bucket as usize >= spec.buckets {
                return;
            }
            counts[slot][bucket as usize] += if spec.bytes {
                bytes as f64
            } else {
                f64::from(lines)
            };
        };
        for e in &self.entries {
            let Some(slot) = slot_of[e.group as usize] else {
                continue;
            };
            let t = i64::from(e.minute) * MINUTE;
            add(slot, t, e.edge_lines, e.edge_bytes);
            // Every other line of the minute falls in the bucket of its second nanosecond.
            add(slot, t + 1, e.lines - e.edge_lines, e.bytes - e.edge_bytes);
        }
        for (key, counts) in keys.into_iter().zip(counts) {
            add_groups(out, Groups::from([(key, counts)]));
        }
    }
}

/// Lines are read this many at a time.
const BLOCK: usize = 1024;

/// A label matcher, tested on a value instead of the index.
enum LabelTest {
    Eq(String),
    Ne(String),
    Re(regex::Regex),
    NotRe(regex::Regex),
}

impl LabelTest {
    fn new(matcher: &Matcher) -> Option<LabelTest> {
        // Anchored on both ends, as tantivy's regex query matches whole terms.
        let re = |r: &str| regex::Regex::new(&format!("^(?:{r})$")).ok();
        Some(match matcher {
            Matcher::Eq(v) => LabelTest::Eq(v.clone()),
            Matcher::Ne(v) => LabelTest::Ne(v.clone()),
            Matcher::Re(r) => LabelTest::Re(re(r)?),
            Matcher::NotRe(r) => LabelTest::NotRe(re(r)?),
        })
    }

    /// As the index answers: a line without the label has no term to match.
    fn accepts(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (LabelTest::Eq(v), Some(x)) => v == x,
            (LabelTest::Re(re), Some(x)) => re.is_match(x),
            (LabelTest::Eq(_) | LabelTest::Re(_), None) => false,
            (LabelTest::Ne(v), Some(x)) => v != x,
            (LabelTest::NotRe(re), Some(x)) => !re.is_match(x),
            (LabelTest::Ne(_) | LabelTest::NotRe(_), None) => true,
        }
    }
}

/// How one count can be answered from rollups.
struct Plan<'a> {
    spec: &'a GroupedCounts,
    /// The labels rolled up: those split by and those filtered on, sorted.
    set: Vec<String>,
    /// Label tests, by position in `set`.
    tests: Vec<(usize, LabelTest)>,
    /// For each label split by, its position in `set`.
    project: Vec<usize>,
    /// The whole minutes of the range (from a minute or 1 ns past one): a rollup answers
    /// for these; lines in `[start, lo)` and `[hi, end)` are counted one by one.
    lo: i64,
    hi: i64,
}

/// Whether `t` is on a minute, or 1 ns past one.
fn on_minute(t: i64) -> bool {
    matches!(t.rem_euclid(MINUTE), 0 | 1)
}

impl<'a> Plan<'a> {
    /// `None` when rollups cannot answer: a word or text filter, a pod label, or buckets
    /// that minutes do not fit in (neither whole minutes from a minute nor one bucket).
    fn new(store: &Store, filters: &Filters, spec: &'a GroupedCounts) -> Option<Plan<'a>> {
        let text = filters.text.as_deref().map(str::trim);
        let minutes = spec.step % MINUTE == 0 && on_minute(spec.start);
        let one_bucket = spec.buckets == 1
            && spec.start <= filters.start
            && spec.start.saturating_add(spec.step) >= filters.end;
        if !filters.words.is_empty()
            || text.is_some_and(|t| !t.is_empty() && t != "*")
            || !(minutes || one_bucket)
        {
            return None;
        }
        let lo = if on_minute(filters.start) {
            filters.start
        } else {
            filters.start - filters.start.rem_euclid(MINUTE) + MINUTE
        };
        let hi = if on_minute(filters.end) {
            filters.end
        } else {
            filters.end - filters.end.rem_euclid(MINUTE)
        };
        let mut set: Vec<String> = spec.group_by.clone();
        for (name, _) in &filters.labels {
            store.fields.label(name)?;
            set.push(name.clone());
        }
        set.sort();
        set.dedup();
        let position = |name: &str| set.iter().position(|s| s == name);
        let tests = (filters.labels.iter())
            .map(|(name, m)| Some((position(name)?, LabelTest::new(m)?)))
            .collect::<Option<Vec<_>>>()?;
        let project = (spec.group_by.iter())
            .map(|name| position(name))
            .collect::<Option<Vec<_>>>()?;
        Some(Plan {
            spec,
            tests,
            project,
            lo,
            hi,
            set,
        })
    }
}

type Key = (SegmentId, u32, Vec<String>);

/// A rollup to build: the segment (by ordinal in the searcher that holds it) and the label set.
type ToBuild = (Searcher, u32, Vec<String>);

/// The rollups of the store's segments, and the label sets wanted.
pub struct Rollups {
    /// `None`: not worth keeping (see `Rollup::build`), or no room.
    cache: Mutex<HashMap<Key, Option<Arc<Rollup>>>>,
    wanted: Mutex<HashMap<Vec<String>, Instant>>,
    /// Segments with fewer lines are not rolled up (`MIN_DOCS`; tests lower it).
    min_docs: AtomicU32,
    /// Segments counted from a rollup, since the start.
    used: AtomicU64,
}

impl Default for Rollups {
    fn default() -> Self {
        Rollups {
            cache: Default::default(),
            wanted: Default::default(),
            min_docs: AtomicU32::new(MIN_DOCS),
            used: AtomicU64::new(0),
        }
    }
}

fn key(segment: &SegmentReader, set: &[String]) -> Key {
    (
        segment.segment_id(),
        segment.num_deleted_docs(),
        set.to_vec(),
    )
}

impl Rollups {
    /// Roll up segments of at least `n` lines only (`u32::MAX`: none).
    pub fn set_min_docs(&self, n: u32) {
        self.min_docs.store(n, Ordering::Relaxed);
    }

    fn big(&self, segment: &SegmentReader) -> bool {
        segment.num_docs() >= self.min_docs.load(Ordering::Relaxed)
    }

    /// How many segments queries have counted from a rollup.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn get(&self, segment: &SegmentReader, set: &[String]) -> Option<Arc<Rollup>> {
        let cache = self.cache.lock().expect("rollups lock");
        cache.get(&key(segment, set)).cloned().flatten()
    }

    fn want(&self, set: &[String]) {
        (self.wanted.lock().expect("wanted lock")).insert(set.to_vec(), Instant::now());
    }

    /// The label sets to roll up new segments for.
    fn wanted(&self) -> Vec<Vec<String>> {
        let mut wanted = self.wanted.lock().expect("wanted lock");
        wanted.retain(|_, at| at.elapsed() < WANTED_FOR);
        let mut out: Vec<Vec<String>> = ALWAYS_WANTED
            .iter()
            .map(|s| s.iter().map(|l| (*l).to_owned()).collect())
            .collect();
        for set in wanted.keys() {
            if !out.contains(set) {
                out.push(set.clone());
            }
        }
        out
    }

    /// Entries held, all rollups together.
    pub fn entries(&self) -> usize {
        let cache = self.cache.lock().expect("rollups lock");
        cache.values().flatten().map(|r| r.entries.len()).sum()
    }

    /// The rollups of wanted sets that big segments lack, and every live segment.
    fn missing(&self, store: &Store) -> (HashSet<SegmentId>, Vec<ToBuild>) {
        let wanted = self.wanted();
        let mut live = HashSet::new();
        let mut todo = Vec::new();
        for day in store.days() {
            let searcher = day.searcher();
            for (ord, segment) in searcher.segment_readers().iter().enumerate() {
                live.insert(segment.segment_id());
                if !self.big(segment) {
                    continue;
                }
                let cache = self.cache.lock().expect("rollups lock");
                for set in &wanted {
                    if !cache.contains_key(&key(segment, set)) {
                        todo.push((searcher.clone(), ord as u32, set.clone()));
                    }
                }
            }
        }
        (live, todo)
    }

    /// How many rollups of wanted sets big segments still lack.
    pub fn pending(&self, store: &Store) -> usize {
        self.missing(store).1.len()
    }

    /// Builds the missing rollups of the wanted sets for every big segment, and forgets those
    /// of segments gone. Returns how many were built.
    pub fn build_missing(&self, store: &Store, metrics: &Metrics) -> tantivy::Result<usize> {
        let (live, todo) = self.missing(store);
        self.cache
            .lock()
            .expect("rollups lock")
            .retain(|(id, _, _), _| live.contains(id));
        metrics.rollups_pending.set(todo.len() as i64);
        let mut built = 0;
        for (searcher, ord, set) in todo {
            let segment = searcher.segment_reader(ord);
            let started = Instant::now();
            let mut rollup = Rollup::build(segment, &set)?;
            metrics
                .rollup_build_duration
                .observe(started.elapsed().as_secs_f64());
            let held = self.entries();
            if rollup
                .as_ref()
                .is_some_and(|r| held + r.entries.len() > MAX_ENTRIES)
            {
                tracing::warn!(held, "rollups are full: counting this segment line by line");
                rollup = None;
            }
            (self.cache.lock().expect("rollups lock"))
                .insert(key(segment, &set), rollup.map(Arc::new));
            built += 1;
            metrics.rollups_pending.dec();
        }
        metrics.rollup_entries.set(self.entries() as i64);
        Ok(built)
    }
}

/// The rollup builder thread: a round every `ROUND` until `stop` says so or is dropped;
/// after a failed round it waits twice as long, up to a minute.
pub fn run(store: Arc<Store>, metrics: Metrics, stop: Receiver<()>) {
    let span = tracing::info_span!("search_rollups");
    let _enter = span.enter();
    let mut wait = ROUND;
    loop {
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match store.rollups.build_missing(&store, &metrics) {
            Ok(built) => {
                if built > 0 {
                    tracing::debug!(built, "rollups built");
                }
                wait = ROUND;
            }
            Err(e) => {
                tracing::error!(error = %e, "building rollups failed; retrying");
                wait = (wait * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Which lines of a segment are counted one by one.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    /// All lines in the range (through the query with its time range).
    Timed,
    /// All lines (the segment is inside the range: no time range to check).
    Untimed,
    /// The range's cut minute at its start, and at its end.
    Head,
    Tail,
}

/// Counts over one day's segments (`spec`, with `filters`): summed from rollups where there
/// are, line by line elsewhere, on all cores.
pub fn count_day(
    store: &Store,
    searcher: &Searcher,
    compiled: &Compiled,
    filters: &Filters,
    spec: &GroupedCounts,
) -> Result<Groups, QueryError> {
    let plan = Plan::new(store, filters, spec);
    if let Some(plan) = &plan {
        store.rollups.want(&plan.set);
    }
    let mut out = Groups::new();
    let mut parts: Vec<(u32, Part)> = Vec::new();
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let ord = ord as u32;
        if segment.num_docs() == 0 {
            continue;
        }
        let within = crate::query::segment_within(segment, filters)?;
        let rollup = match &plan {
            Some(plan) if store.rollups.big(segment) => store
                .rollups
                .get(segment, &plan.set)
                .map(|rollup| (plan, rollup)),
            _ => None,
        };
        let Some((plan, rollup)) = rollup else {
            parts.push((ord, if within { Part::Untimed } else { Part::Timed }));
            continue;
        };
        store.rollups.used.fetch_add(1, Ordering::Relaxed);
        if within {
            rollup.add_to(plan, true, &mut out);
            continue;
        }
        rollup.add_to(plan, false, &mut out);
        if filters.start < plan.lo {
            parts.push((ord, Part::Head));
        }
        if plan.hi < filters.end && plan.lo <= plan.hi {
            parts.push((ord, Part::Tail));
        }
    }
    if parts.is_empty() {
        return Ok(out);
    }
    let scoring = EnableScoring::disabled_from_searcher(searcher);
    let cut = |start: i64, end: i64| -> Result<Box<dyn tantivy::query::Weight>, QueryError> {
        let part = Filters {
            start,
            end,
            ..filters.clone()
        };
        let compiled = crate::query::compile(&store.fields, &part)?;
        Ok(compiled.query.weight(scoring)?)
    };
    let (lo, hi) = plan.as_ref().map_or((filters.start, filters.end), |p| {
        (p.lo.min(filters.end), p.hi.max(p.lo).max(filters.start))
    });
    // Only the weights of parts in use: a cut part compiles its own query.
    let weight = |part: Part| -> Result<Option<Box<dyn tantivy::query::Weight>>, QueryError> {
        if !parts.iter().any(|(_, p)| *p == part) {
            return Ok(None);
        }
        Ok(Some(match part {
            Part::Timed => compiled.query.weight(scoring)?,
            Part::Untimed => compiled.untimed.weight(scoring)?,
            Part::Head => cut(filters.start, lo)?,
            Part::Tail => cut(hi, filters.end)?,
        }))
    };
    let weights = [
        weight(Part::Timed)?,
        weight(Part::Untimed)?,
        weight(Part::Head)?,
        weight(Part::Tail)?,
    ];
    let counted = store.executor().map(
        |(ord, part)| {
            let weight = weights[part as usize]
                .as_deref()
                .expect("a part in use has its weight");
            spec.collect_segment(weight, ord, searcher.segment_reader(ord))
        },
        parts.iter().copied(),
    )?;
    for groups in counted {
        add_groups(&mut out, groups);
    }
    Ok(out)
}
