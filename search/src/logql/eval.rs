//! Evaluating LogQL over the store.
//!
//! Log queries page through the index in the stable (timestamp, sequence) order and run the
//! pipeline on each line until `limit` lines pass. Metric queries produce one value per step:
//! a range aggregation with no pipeline is counted from the fast columns alone, in buckets of
//! the greatest common divisor of step and range; otherwise the matching lines are read once
//! and their windows counted in memory. Aggregations and binary operators then work on those
//! step-aligned series, as Prometheus does.

use std::collections::{BTreeMap, HashMap};

use super::ast::*;
use super::lines::{Labels, STREAM_LABELS};
use crate::query::{self, Filters, Matcher, Order, QueryError, SearchRequest, needle_words};
use crate::schema::LABEL_FIELDS;
use crate::store::Store;

/// Most lines a query may read from the document store.
pub const MAX_SCANNED: usize = 5_000_000;
/// Most series a metric query may return.
pub const MAX_SERIES: usize = 5_000;
/// Most points per series (Loki's limit).
pub const MAX_POINTS: usize = 11_000;

/// One line of a log query's answer.
#[derive(Clone, Debug)]
pub struct Entry {
    pub ts: i64,
    pub seq: u64,
    pub labels: Labels,
    pub line: String,
}

/// The index's share of a log expression, and whether it answers the selector and pipeline
/// exactly (nothing left to check per line).
pub fn plan(expr: &LogExpr, start: i64, end: i64) -> (Filters, bool) {
    let mut exact = expr.stages.is_empty();
    let mut labels = Vec::new();
    for m in &expr.matchers {
        let builtin = LABEL_FIELDS.contains(&m.name.as_str());
        let name = if builtin {
            m.name.clone()
        } else {
            format!("labels.{}", m.name)
        };
        let empty_matches = m.matches(Some(""));
        let pushed = match m.op {
            MatchOp::Eq if !m.value.is_empty() => Some(Matcher::Eq(m.value.clone())),
            MatchOp::Ne if !m.value.is_empty() => Some(Matcher::Ne(m.value.clone())),
            MatchOp::Re if builtin && !empty_matches => Some(Matcher::Re(m.value.clone())),
            // `!~` with a pattern that cannot match "": lines without the label pass both ways.
            MatchOp::NotRe if builtin && empty_matches => Some(Matcher::NotRe(m.value.clone())),
            _ => None,
        };
        match pushed {
            Some(matcher) => labels.push((name, matcher)),
            None => exact = false,
        }
    }
    let mut words = Vec::new();
    for stage in &expr.stages {
        match stage {
            Stage::Line(f) if f.op == LineOp::Contains && f.values.len() == 1 => {
                words.extend(needle_words(&f.values[0]));
            }
            // The line changes: later filters look at other text.
            Stage::LineFormat(_) => break,
            _ => {}
        }
    }
    (
        Filters {
            text: None,
            labels,
            start,
            end,
            words,
        },
        exact,
    )
}

/// Up to `limit` lines of `expr` in `[start, end)`, in `order`.
pub fn select_logs(
    store: &Store,
    expr: &LogExpr,
    start: i64,
    end: i64,
    limit: usize,
    order: Order,
) -> Result<Vec<Entry>, QueryError> {
    let (filters, exact) = plan(expr, start, end);
    let filters = query::expand_words(store, &filters)?;
    // Pages grow: a filter that keeps most lines needs one small page, a rare one reads on.
    let mut page = limit.max(1);
    let mut out = Vec::new();
    let mut after = None;
    let mut scanned = 0;
    while out.len() < limit {
        let result = query::search(
            store,
            &SearchRequest {
                filters: filters.clone(),
                order,
                limit: page,
                after,
                highlight: false,
                count: false,
            },
        )?;
        scanned += result.hits.len();
        for hit in result.hits {
            if out.len() >= limit {
                break;
            }
            if !exact && !expr.selector_matches(&hit.record) {
                continue;
            }
            if let Some(p) = expr.process(&hit.record) {
                out.push(Entry {
                    ts: hit.ts,
                    seq: hit.seq,
                    labels: p.labels,
                    line: p.line,
                });
            }
        }
        if !exact {
            page = (page * 2).min(10_000);
        }
        match result.next {
            Some(next) if scanned < MAX_SCANNED => after = Some(next),
            Some(_) => {
                return Err(QueryError::Invalid(format!(
                    "the query read {MAX_SCANNED} lines without filling its limit: narrow the selector or shorten the time range"
                )));
            }
            None => break,
        }
    }
    Ok(out)
}

/// The instants a metric query is evaluated at: `start + i*step` for `i < n`.
#[derive(Clone, Copy, Debug)]
pub struct Steps {
    pub start: i64,
    pub step: i64,
    pub n: usize,
}

impl Steps {
    /// Every step from `start` to `end`, both included.
    pub fn range(start: i64, end: i64, step: i64) -> Result<Steps, QueryError> {
        if step <= 0 {
            return Err(QueryError::Invalid(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        let n = ((end - start) / step) as usize + 1;
        if n > MAX_POINTS {
            return Err(QueryError::Invalid(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try decreasing the query resolution (?step=XX)"
            )));
        }
        Ok(Steps { start, step, n })
    }

    pub fn instant(at: i64) -> Steps {
        Steps {
            start: at,
            step: 1,
            n: 1,
        }
    }

    pub fn at(&self, i: usize) -> i64 {
        self.start + i as i64 * self.step
    }
}

/// A series: one value (or none) per step.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// What a metric expression evaluates to.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Vec<Series>),
}

pub fn eval(store: &Store, expr: &MetricExpr, steps: &Steps) -> Result<Value, QueryError> {
    eval_with(store, expr, steps, None)
}

/// `keep`: the only labels the caller will look at (an enclosing `sum by`), so counting can
/// split by fewer columns.
fn eval_with(
    store: &Store,
    expr: &MetricExpr,
    steps: &Steps,
    keep: Option<&[String]>,
) -> Result<Value, QueryError> {
    let value = match expr {
        MetricExpr::Number(n) => Value::Scalar(*n),
        MetricExpr::Vector(n) => Value::Vector(vec![Series {
            labels: Labels::new(),
            values: vec![Some(*n); steps.n],
        }]),
        MetricExpr::Range {
            op,
            log,
            range,
            offset,
            unwrap: Some(unwrap),
            param,
            grouping,
        } => {
            let window = Window {
                range: *range,
                offset: *offset,
            };
            Value::Vector(unwrapped_agg(
                store,
                *op,
                log,
                unwrap,
                *param,
                grouping.as_ref(),
                window,
                steps,
            )?)
        }
        MetricExpr::Range {
            op,
            log,
            range,
            offset,
            unwrap: None,
            ..
        } => Value::Vector(range_agg(store, *op, log, *range, *offset, steps, keep)?),
        MetricExpr::Agg {
            op,
            param,
            grouping,
            inner,
        } => {
            let hint = match grouping {
                Some(Grouping::By(labels)) if !matches!(op, AggOp::Topk | AggOp::Bottomk) => {
                    Some(labels.as_slice())
                }
                None if !matches!(op, AggOp::Topk | AggOp::Bottomk) => Some(&[][..]),
                _ => None,
            };
            let series = match eval_with(store, inner, steps, hint)? {
                Value::Vector(v) => v,
                Value::Scalar(_) => {
                    return Err(QueryError::Invalid(
                        "aggregations take a vector, not a number".into(),
                    ));
                }
            };
            Value::Vector(aggregate(*op, *param, grouping.as_ref(), series, steps.n)?)
        }
        MetricExpr::Binary {
            op,
            return_bool,
            matching,
            lhs,
            rhs,
        } => binary(
            *op,
            *return_bool,
            matching.as_ref(),
            eval_with(store, lhs, steps, None)?,
            eval_with(store, rhs, steps, None)?,
            steps.n,
        )?,
    };
    if let Value::Vector(v) = &value
        && v.len() > MAX_SERIES
    {
        return Err(QueryError::Invalid(format!(
            "maximum of series ({MAX_SERIES}) reached for a single query: aggregate with sum by (…)"
        )));
    }
    Ok(value)
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Per series, the lines (or bytes) in each step's window `(t - offset - range, t - offset]`.
fn range_agg(
    store: &Store,
    op: RangeOp,
    log: &LogExpr,
    range: i64,
    offset: i64,
    steps: &Steps,
    keep: Option<&[String]>,
) -> Result<Vec<Series>, QueryError> {
    // The first window starts just after t0 - offset - range; the last ends at tN - offset.
    let first = steps.start - offset - range + 1;
    let last = steps.at(steps.n - 1) - offset + 1;
    let (filters, exact) = plan(log, first, last);
    let filters = query::expand_words(store, &filters)?;
    let bytes = matches!(op, RangeOp::BytesOverTime | RangeOp::BytesRate);
    let bucket = if steps.n == 1 {
        range
    } else {
        gcd(range, steps.step)
    };
    let buckets = (last - first + bucket - 1) / bucket;
    let mut series = if exact && buckets <= 20_000 {
        counted(
            store,
            &filters,
            bucket,
            buckets as usize,
            range,
            steps,
            bytes,
            keep,
        )?
    } else {
        scanned(store, log, &filters, range, steps, offset, bytes)?
    };
    let secs = range as f64 / 1e9;
    match op {
        RangeOp::CountOverTime | RangeOp::BytesOverTime => {}
        RangeOp::Rate | RangeOp::BytesRate => {
            for s in &mut series {
                for v in s.values.iter_mut().flatten() {
                    *v /= secs;
                }
            }
        }
        RangeOp::AbsentOverTime => {
            let labels: Labels = log
                .matchers
                .iter()
                .filter(|m| m.op == MatchOp::Eq)
                .map(|m| (m.name.clone(), m.value.clone()))
                .collect();
            let values = (0..steps.n)
                .map(|i| (!series.iter().any(|s| s.values[i].is_some())).then_some(1.0))
                .collect::<Vec<_>>();
            series = if values.iter().any(Option::is_some) {
                vec![Series { labels, values }]
            } else {
                Vec::new()
            };
        }
        // The parser lets none of these through without `| unwrap`.
        op => {
            return Err(QueryError::Invalid(format!(
                "invalid aggregation {} without unwrap",
                op.name()
            )));
        }
    }
    Ok(series)
}

/// A range aggregation's window: `(t - offset - range, t - offset]` at each step `t` (ns).
#[derive(Clone, Copy)]
struct Window {
    range: i64,
    offset: i64,
}

/// `sum_over_time`, `quantile_over_time`… and `rate` over the values of an unwrapped label, per
/// series (the line's labels without the unwrapped one) or per group of `by`/`without`.
#[allow(clippy::too_many_arguments)]
fn unwrapped_agg(
    store: &Store,
    op: RangeOp,
    log: &LogExpr,
    unwrap: &Unwrap,
    param: Option<f64>,
    grouping: Option<&Grouping>,
    window: Window,
    steps: &Steps,
) -> Result<Vec<Series>, QueryError> {
    let Window { range, offset } = window;
    if let Some(q) = param
        && !(0.0..=1.0).contains(&q)
    {
        return Err(QueryError::Invalid(format!(
            "quantile_over_time: φ must be between 0 and 1, got {q}"
        )));
    }
    let first = steps.start - offset - range + 1;
    let last = steps.at(steps.n - 1) - offset + 1;
    let (filters, _) = plan(log, first, last);
    let filters = query::expand_words(store, &filters)?;
    let mut points: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
    query::scan(store, &filters, MAX_SCANNED, |ts, _, record| {
        if !log.selector_matches(&record) {
            return;
        }
        let Some(mut p) = log.process(&record) else {
            return;
        };
        let raw = p
            .labels
            .remove(&unwrap.label)
            .or_else(|| super::lines::record_label(&record, &unwrap.label).map(str::to_owned));
        let Some(v) = raw.and_then(|raw| super::lines::unwrap_value(unwrap.conversion, &raw))
        else {
            return;
        };
        let key = match grouping {
            Some(g) => group_key(&p.labels, Some(g)),
            None => p.labels,
        };
        points.entry(key).or_default().push((ts, v));
    })?;
    let secs = range as f64 / 1e9;
    let mut out = Vec::new();
    for (labels, mut pts) in points {
        pts.sort_by_key(|p| p.0);
        let values: Vec<Option<f64>> = (0..steps.n)
            .map(|i| {
                let end = steps.at(i) - offset;
                let lo = pts.partition_point(|p| p.0 <= end - range);
                let hi = pts.partition_point(|p| p.0 <= end);
                let in_window: Vec<f64> = pts[lo..hi].iter().map(|p| p.1).collect();
                over_time(op, param, &in_window, secs)
            })
            .collect();
        if values.iter().any(Option::is_some) {
            out.push(Series { labels, values });
        }
    }
    Ok(out)
}

/// One window's value of an unwrapped range aggregation over its samples in time order.
fn over_time(op: RangeOp, param: Option<f64>, v: &[f64], secs: f64) -> Option<f64> {
    let (&first, &last) = (v.first()?, v.last()?);
    let n = v.len() as f64;
    let sum: f64 = v.iter().sum();
    let variance = || {
        let mean = sum / n;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n
    };
    Some(match op {
        RangeOp::SumOverTime => sum,
        RangeOp::AvgOverTime => sum / n,
        RangeOp::MinOverTime => v.iter().copied().fold(f64::INFINITY, f64::min),
        RangeOp::MaxOverTime => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        RangeOp::FirstOverTime => first,
        RangeOp::LastOverTime => last,
        RangeOp::StdvarOverTime => variance(),
        RangeOp::StddevOverTime => variance().sqrt(),
        RangeOp::QuantileOverTime => quantile(param.unwrap_or(0.5), v),
        // rate over an unwrapped label: the per-second sum.
        RangeOp::Rate => sum / secs,
        RangeOp::CountOverTime => n,
        RangeOp::BytesOverTime | RangeOp::BytesRate | RangeOp::AbsentOverTime => return None,
    })
}

/// Prometheus's `quantile`: linear interpolation between the closest ranks.
fn quantile(q: f64, values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = q * (sorted.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = (lower + 1).min(sorted.len() - 1);
    let weight = rank - lower as f64;
    sorted[lower] * (1.0 - weight) + sorted[upper] * weight
}

/// Windows summed from per-bucket counts read off the fast columns.
#[allow(clippy::too_many_arguments)]
fn counted(
    store: &Store,
    filters: &Filters,
    bucket: i64,
    buckets: usize,
    range: i64,
    steps: &Steps,
    bytes: bool,
    keep: Option<&[String]>,
) -> Result<Vec<Series>, QueryError> {
    let group_by: Vec<String> = STREAM_LABELS
        .iter()
        .filter(|l| keep.is_none_or(|k| k.iter().any(|x| x == *l)))
        .map(|l| (*l).to_owned())
        .collect();
    let collector = crate::counts::GroupedCounts {
        start: filters.start,
        step: bucket,
        buckets,
        group_by: group_by.clone(),
        bytes,
    };
    let compiled = query::compile(&store.fields, filters)?;
    let mut groups = crate::counts::Groups::new();
    for day in store.days_between(filters.start, filters.end) {
        let searcher = day.searcher();
        let day_groups =
            crate::rollup::count_day(store, &searcher, &compiled, filters, &collector)?;
        crate::counts::add_groups(&mut groups, day_groups);
    }
    let per_window = (range / bucket) as usize;
    let per_step = (steps.step / bucket).max(0) as usize;
    let mut out = Vec::new();
    for (key, counts) in groups {
        let labels: Labels = group_by
            .iter()
            .zip(key)
            .filter_map(|(n, v)| Some((n.clone(), v?)))
            .collect();
        let values: Vec<Option<f64>> = (0..steps.n)
            .map(|i| {
                let from = i * per_step;
                let total: f64 = counts[from.min(buckets)..(from + per_window).min(buckets)]
                    .iter()
                    .sum();
                (total > 0.0).then_some(total)
            })
            .collect();
        if values.iter().any(Option::is_some) {
            out.push(Series { labels, values });
        }
    }
    Ok(out)
}

/// Windows counted over lines read from the store and run through the pipeline.
fn scanned(
    store: &Store,
    log: &LogExpr,
    filters: &Filters,
    range: i64,
    steps: &Steps,
    offset: i64,
    bytes: bool,
) -> Result<Vec<Series>, QueryError> {
    let mut points: HashMap<Labels, Vec<(i64, f64)>> = HashMap::new();
    query::scan(store, filters, MAX_SCANNED, |ts, _, record| {
        if !log.selector_matches(&record) {
            return;
        }
        if let Some(p) = log.process(&record) {
            let v = if bytes { p.line.len() as f64 } else { 1.0 };
            points.entry(p.labels).or_default().push((ts, v));
        }
    })?;
    let mut out = Vec::new();
    for (labels, mut pts) in points {
        pts.sort_unstable_by_key(|p| p.0);
        // Prefix sums, so each window is two binary searches.
        let mut sums = Vec::with_capacity(pts.len() + 1);
        sums.push(0.0);
        for p in &pts {
            sums.push(sums.last().copied().unwrap_or(0.0) + p.1);
        }
        let values: Vec<Option<f64>> = (0..steps.n)
            .map(|i| {
                let end = steps.at(i) - offset;
                let lo = pts.partition_point(|p| p.0 <= end - range);
                let hi = pts.partition_point(|p| p.0 <= end);
                (hi > lo).then(|| sums[hi] - sums[lo])
            })
            .collect();
        if values.iter().any(Option::is_some) {
            out.push(Series { labels, values });
        }
    }
    Ok(out)
}

fn group_key(labels: &Labels, grouping: Option<&Grouping>) -> Labels {
    match grouping {
        None => Labels::new(),
        Some(Grouping::By(names)) => labels
            .iter()
            .filter(|(k, _)| names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        Some(Grouping::Without(names)) => labels
            .iter()
            .filter(|(k, _)| !names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn aggregate(
    op: AggOp,
    param: Option<f64>,
    grouping: Option<&Grouping>,
    series: Vec<Series>,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    let mut groups: BTreeMap<Labels, Vec<Series>> = BTreeMap::new();
    for s in series {
        groups
            .entry(group_key(&s.labels, grouping))
            .or_default()
            .push(s);
    }
    let mut out = Vec::new();
    if let AggOp::Topk | AggOp::Bottomk = op {
        let k = param.unwrap_or(1.0);
        if k < 1.0 {
            return Ok(out);
        }
        let k = k as usize;
        for (_, members) in groups {
            let mut kept: Vec<Series> = members
                .iter()
                .map(|s| Series {
                    labels: s.labels.clone(),
                    values: vec![None; n],
                })
                .collect();
            for i in 0..n {
                let mut present: Vec<(usize, f64)> = members
                    .iter()
                    .enumerate()
                    .filter_map(|(j, s)| Some((j, s.values[i]?)))
                    .collect();
                present.sort_by(|a, b| {
                    let o = a.1.total_cmp(&b.1);
                    if op == AggOp::Topk { o.reverse() } else { o }
                });
                for (j, v) in present.into_iter().take(k) {
                    kept[j].values[i] = Some(v);
                }
            }
            out.extend(
                kept.into_iter()
                    .filter(|s| s.values.iter().any(Option::is_some)),
            );
        }
        return Ok(out);
    }
    for (labels, members) in groups {
        let values: Vec<Option<f64>> = (0..n)
            .map(|i| {
                let vals: Vec<f64> = members.iter().filter_map(|s| s.values[i]).collect();
                if vals.is_empty() {
                    return None;
                }
                let count = vals.len() as f64;
                let sum: f64 = vals.iter().sum();
                let mean = sum / count;
                let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
                Some(match op {
                    AggOp::Sum => sum,
                    AggOp::Avg => mean,
                    AggOp::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
                    AggOp::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    AggOp::Count => count,
                    AggOp::Stdvar => var,
                    AggOp::Stddev => var.sqrt(),
                    AggOp::Topk | AggOp::Bottomk => unreachable!("handled above"),
                })
            })
            .collect();
        if values.iter().any(Option::is_some) {
            out.push(Series { labels, values });
        }
    }
    Ok(out)
}

fn arith(op: BinOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Pow => a.powf(b),
        BinOp::Eq => f64::from(u8::from(a == b)),
        BinOp::Ne => f64::from(u8::from(a != b)),
        BinOp::Gt => f64::from(u8::from(a > b)),
        BinOp::Ge => f64::from(u8::from(a >= b)),
        BinOp::Lt => f64::from(u8::from(a < b)),
        BinOp::Le => f64::from(u8::from(a <= b)),
        BinOp::And | BinOp::Or | BinOp::Unless => return None,
    })
}

/// One sample of `lhs op rhs`; `keep` is the vector side's value a filtering comparison keeps.
pub(super) fn sample(op: BinOp, return_bool: bool, a: f64, b: f64, keep: f64) -> Option<f64> {
    let r = arith(op, a, b)?;
    if op.is_comparison() && !return_bool {
        return (r == 1.0).then_some(keep);
    }
    Some(r)
}

fn binary(
    op: BinOp,
    return_bool: bool,
    matching: Option<&VectorMatching>,
    lhs: Value,
    rhs: Value,
    n: usize,
) -> Result<Value, QueryError> {
    if op.is_comparison()
        && !return_bool
        && matches!((&lhs, &rhs), (Value::Scalar(_), Value::Scalar(_)))
    {
        return Err(QueryError::Invalid(
            "comparisons between numbers must use the bool modifier".into(),
        ));
    }
    Ok(match (lhs, rhs) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            if op.is_set() {
                return Err(QueryError::Invalid(format!(
                    "{op:?} is only allowed between vectors"
                )));
            }
            Value::Scalar(arith(op, a, b).unwrap_or(f64::NAN))
        }
        (Value::Vector(v), Value::Scalar(b)) => {
            if op.is_set() {
                return Err(QueryError::Invalid(format!(
                    "{op:?} is only allowed between vectors"
                )));
            }
            Value::Vector(map_series(v, |a| sample(op, return_bool, a, b, a)))
        }
        (Value::Scalar(a), Value::Vector(v)) => {
            if op.is_set() {
                return Err(QueryError::Invalid(format!(
                    "{op:?} is only allowed between vectors"
                )));
            }
            Value::Vector(map_series(v, |b| sample(op, return_bool, a, b, b)))
        }
        (Value::Vector(l), Value::Vector(r)) => Value::Vector(super::matching::vector_vector(
            op,
            return_bool,
            matching,
            l,
            r,
            n,
        )?),
    })
}

fn map_series(v: Vec<Series>, f: impl Fn(f64) -> Option<f64>) -> Vec<Series> {
    v.into_iter()
        .filter_map(|s| {
            let values: Vec<Option<f64>> = s.values.iter().map(|x| x.and_then(&f)).collect();
            values.iter().any(Option::is_some).then_some(Series {
                labels: s.labels,
                values,
            })
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::logql) fn series(labels: &[(&str, &str)], values: &[Option<f64>]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn aggregations() {
        let input = vec![
            series(&[("app", "a"), ("pod", "1")], &[Some(1.0), Some(5.0)]),
            series(&[("app", "a"), ("pod", "2")], &[Some(3.0), None]),
            series(&[("app", "b"), ("pod", "3")], &[None, Some(2.0)]),
        ];
        let by_app = Some(Grouping::By(vec!["app".into()]));
        let sum = aggregate(AggOp::Sum, None, by_app.as_ref(), input.clone(), 2).unwrap();
        assert_eq!(sum[0], series(&[("app", "a")], &[Some(4.0), Some(5.0)]));
        assert_eq!(sum[1], series(&[("app", "b")], &[None, Some(2.0)]));
        let avg = aggregate(AggOp::Avg, None, None, input.clone(), 2).unwrap();
        assert_eq!(avg[0].values, vec![Some(2.0), Some(3.5)]);
        let top = aggregate(AggOp::Topk, Some(1.0), None, input.clone(), 2).unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].values, vec![None, Some(5.0)]);
        assert_eq!(top[1].values, vec![Some(3.0), None]);
        let without = aggregate(
            AggOp::Count,
            None,
            Some(&Grouping::Without(vec!["pod".into()])),
            input,
            2,
        )
        .unwrap();
        assert_eq!(without[0].values, vec![Some(2.0), Some(1.0)]);
    }

    #[test]
    fn binary_operators() {
        let one = Value::Vector(vec![series(&[], &[Some(1.0)])]);
        assert_eq!(
            binary(BinOp::Add, false, None, one.clone(), one.clone(), 1).unwrap(),
            Value::Vector(vec![series(&[], &[Some(2.0)])])
        );
        let v = Value::Vector(vec![
            series(&[("a", "x")], &[Some(1.0), Some(10.0)]),
            series(&[("a", "y")], &[Some(7.0), None]),
        ]);
        let Value::Vector(gt) =
            binary(BinOp::Gt, false, None, v.clone(), Value::Scalar(5.0), 2).unwrap()
        else {
            panic!()
        };
        assert_eq!(gt[0].values, vec![None, Some(10.0)]);
        assert_eq!(gt[1].values, vec![Some(7.0), None]);
        let Value::Vector(b) =
            binary(BinOp::Gt, true, None, v.clone(), Value::Scalar(5.0), 2).unwrap()
        else {
            panic!()
        };
        assert_eq!(b[0].values, vec![Some(0.0), Some(1.0)]);
        assert_eq!(
            binary(
                BinOp::Pow,
                false,
                None,
                Value::Scalar(2.0),
                Value::Scalar(10.0),
                1
            )
            .unwrap(),
            Value::Scalar(1024.0)
        );
        assert!(
            binary(
                BinOp::Gt,
                false,
                None,
                Value::Scalar(2.0),
                Value::Scalar(1.0),
                1
            )
            .is_err()
        );
        let Value::Vector(d) = binary(BinOp::Div, false, None, v.clone(), v, 2).unwrap() else {
            panic!()
        };
        assert_eq!(d[0].values, vec![Some(1.0), Some(1.0)]);
    }
}
