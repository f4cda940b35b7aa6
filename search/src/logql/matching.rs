//! Binary operations between two vectors, as PromQL pairs their series: on identical labels by
//! default, on some labels with `on(…)`, on all but some with `ignoring(…)`; one-to-one unless
//! `group_left`/`group_right` lets many series of one side share a partner on the other. Pairs
//! are made at each step among the series that have a value there, so a query range is
//! evaluated as Prometheus evaluates each of its instants.

use std::collections::{BTreeMap, HashMap};

use super::ast::{BinOp, Group, VectorMatching};
use super::eval::{Series, sample};
use super::lines::Labels;
use crate::query::QueryError;

/// The labels two series are matched on.
fn key(labels: &Labels, matching: Option<&VectorMatching>) -> Labels {
    match matching {
        None => labels.clone(),
        Some(m) => labels
            .iter()
            .filter(|(k, _)| m.labels.contains(k) == m.on)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The series of a side with a value at each step, by match key.
struct Side<'a> {
    series: &'a [Series],
    keys: Vec<Labels>,
}

impl<'a> Side<'a> {
    fn new(series: &'a [Series], matching: Option<&VectorMatching>) -> Self {
        Side {
            keys: series.iter().map(|s| key(&s.labels, matching)).collect(),
            series,
        }
    }

    /// Key → (series index, value) of the series present at step `i`; `Err` on a key
    /// shared by two present series.
    fn at(&self, i: usize) -> Result<HashMap<&Labels, (usize, f64)>, Labels> {
        let mut present = HashMap::new();
        for (n, s) in self.series.iter().enumerate() {
            if let Some(v) = s.values[i]
                && present.insert(&self.keys[n], (n, v)).is_some()
            {
                return Err(self.keys[n].clone());
            }
        }
        Ok(present)
    }
}

fn duplicate(side: &str, key: &Labels) -> QueryError {
    QueryError::Invalid(format!(
        "found duplicate series for the match group {key:?} on the {side} hand-side of the operation: many-to-many matching not allowed: matching labels must be unique on one side"
    ))
}

/// `lhs op rhs` between two vectors of `n` steps.
pub(super) fn vector_vector(
    op: BinOp,
    return_bool: bool,
    matching: Option<&VectorMatching>,
    l: Vec<Series>,
    r: Vec<Series>,
    n: usize,
) -> Result<Vec<Series>, QueryError> {
    if op.is_set() {
        return Ok(set_operation(op, matching, l, r, n));
    }
    let group = matching.and_then(|m| m.group.as_ref());
    // The "one" side must be unique per key at each step; the "many" side too when matching is
    // one-to-one.
    let left = Side::new(&l, matching);
    let right = Side::new(&r, matching);
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for i in 0..n {
        let (many, one, many_is_left) = match group {
            Some(Group::Right(_)) => (&right, &left, false),
            _ => (&left, &right, true),
        };
        let ones = one
            .at(i)
            .map_err(|k| duplicate(if many_is_left { "right" } else { "left" }, &k))?;
        if group.is_none() {
            many.at(i).map_err(|k| duplicate("left", &k))?;
        }
        for (m, s) in many.series.iter().enumerate() {
            let Some(mv) = s.values[i] else {
                continue;
            };
            let Some(&(o, ov)) = ones.get(&many.keys[m]) else {
                continue;
            };
            let (a, b) = if many_is_left { (mv, ov) } else { (ov, mv) };
            let Some(value) = sample(op, return_bool, a, b, a) else {
                continue;
            };
            let labels = result_labels(&s.labels, &one.series[o].labels, matching);
            let slot = &mut out.entry(labels.clone()).or_insert_with(|| vec![None; n])[i];
            if slot.is_some() {
                return Err(QueryError::Invalid(format!(
                    "multiple matches for labels {labels:?}: grouping labels must ensure unique matches"
                )));
            }
            *slot = Some(value);
        }
    }
    Ok(out
        .into_iter()
        .map(|(labels, values)| Series { labels, values })
        .collect())
}

/// The labels of a result: those of the "many" series with the group's labels taken from its
/// partner, or for one-to-one matching the matched labels (`on`) or all but the ignored ones.
fn result_labels(many: &Labels, one: &Labels, matching: Option<&VectorMatching>) -> Labels {
    match matching {
        None => many.clone(),
        Some(VectorMatching {
            group: Some(Group::Left(extra) | Group::Right(extra)),
            ..
        }) => {
            let mut labels = many.clone();
            for name in extra {
                match one.get(name) {
                    Some(v) => labels.insert(name.clone(), v.clone()),
                    None => labels.remove(name),
                };
            }
            labels
        }
        Some(m) => key(many, Some(m)),
    }
}

/// `and`, `or`, `unless`: series of the sides kept or dropped by whether the other side has a
/// series with the same key at each step; labels are kept as they are.
fn set_operation(
    op: BinOp,
    matching: Option<&VectorMatching>,
    l: Vec<Series>,
    r: Vec<Series>,
    n: usize,
) -> Vec<Series> {
    let present = |side: &[Series], i: usize| -> std::collections::HashSet<Labels> {
        side.iter()
            .filter(|s| s.values[i].is_some())
            .map(|s| key(&s.labels, matching))
            .collect()
    };
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    let mut order: Vec<Labels> = Vec::new();
    let mut put =
        |labels: &Labels, i: usize, v: f64, out: &mut BTreeMap<Labels, Vec<Option<f64>>>| {
            let values = out.entry(labels.clone()).or_insert_with(|| {
                order.push(labels.clone());
                vec![None; n]
            });
            if values[i].is_none() {
                values[i] = Some(v);
            }
        };
    for i in 0..n {
        let right = present(&r, i);
        let left = present(&l, i);
        for s in &l {
            let Some(v) = s.values[i] else { continue };
            let there = right.contains(&key(&s.labels, matching));
            let keep = match op {
                BinOp::And => there,
                BinOp::Unless => !there,
                _ => true,
            };
            if keep {
                put(&s.labels, i, v, &mut out);
            }
        }
        if op == BinOp::Or {
            for s in &r {
                if let Some(v) = s.values[i]
                    && !left.contains(&key(&s.labels, matching))
                {
                    put(&s.labels, i, v, &mut out);
                }
            }
        }
    }
    // Left-hand series first, then the right's, as they were first seen.
    order
        .into_iter()
        .filter_map(|labels| {
            let values = out.remove(&labels)?;
            Some(Series { labels, values })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::eval::tests::series;
    use super::*;

    fn on(labels: &[&str], group: Option<Group>) -> VectorMatching {
        VectorMatching {
            on: true,
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            group,
        }
    }

    #[test]
    fn one_to_one_on_and_ignoring() {
        let errors = vec![
            series(&[("pod", "a"), ("level", "error")], &[Some(2.0), Some(4.0)]),
            series(&[("pod", "b"), ("level", "error")], &[Some(1.0), None]),
        ];
        let all = vec![
            series(&[("pod", "a"), ("level", "all")], &[Some(10.0), Some(8.0)]),
            series(&[("pod", "b"), ("level", "all")], &[Some(4.0), Some(4.0)]),
        ];
        // Without matching nothing pairs up: the levels differ.
        let none = vector_vector(BinOp::Div, false, None, errors.clone(), all.clone(), 2).unwrap();
        assert!(none.is_empty());
        let ratio = vector_vector(
            BinOp::Div,
            false,
            Some(&on(&["pod"], None)),
            errors.clone(),
            all.clone(),
            2,
        )
        .unwrap();
        assert_eq!(
            ratio,
            vec![
                series(&[("pod", "a")], &[Some(0.2), Some(0.5)]),
                series(&[("pod", "b")], &[Some(0.25), None]),
            ]
        );
        let ignoring = VectorMatching {
            on: false,
            labels: vec!["level".into()],
            group: None,
        };
        let same = vector_vector(BinOp::Div, false, Some(&ignoring), errors, all, 2).unwrap();
        assert_eq!(same, ratio);
    }

    #[test]
    fn group_left_copies_labels_and_duplicates_are_errors() {
        let per_pod = vec![
            series(&[("pod", "a"), ("node", "n1")], &[Some(2.0)]),
            series(&[("pod", "b"), ("node", "n1")], &[Some(3.0)]),
        ];
        let per_node = vec![series(&[("node", "n1"), ("zone", "z")], &[Some(10.0)])];
        let m = on(&["node"], Some(Group::Left(vec!["zone".into()])));
        let got = vector_vector(
            BinOp::Mul,
            false,
            Some(&m),
            per_pod.clone(),
            per_node.clone(),
            1,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                series(
                    &[("node", "n1"), ("pod", "a"), ("zone", "z")],
                    &[Some(20.0)]
                ),
                series(
                    &[("node", "n1"), ("pod", "b"), ("zone", "z")],
                    &[Some(30.0)]
                ),
            ]
        );
        // group_right: the right side is the many side; the value is still lhs op rhs.
        let m = on(&["node"], Some(Group::Right(vec![])));
        let got = vector_vector(
            BinOp::Sub,
            false,
            Some(&m),
            per_node.clone(),
            per_pod.clone(),
            1,
        )
        .unwrap();
        assert_eq!(got[0].values, vec![Some(8.0)]);
        assert_eq!(got[0].labels["pod"], "a");
        // One-to-one with two left series per key is refused.
        let e = vector_vector(
            BinOp::Mul,
            false,
            Some(&on(&["node"], None)),
            per_pod,
            per_node,
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("many-to-many"), "{e}");
    }

    #[test]
    fn set_operations_match_on_keys_per_step() {
        let l = vec![
            series(&[("pod", "a"), ("x", "1")], &[Some(1.0), Some(1.0)]),
            series(&[("pod", "b"), ("x", "1")], &[Some(2.0), None]),
        ];
        let r = vec![
            series(&[("pod", "a"), ("x", "2")], &[None, Some(5.0)]),
            series(&[("pod", "c"), ("x", "2")], &[Some(7.0), Some(7.0)]),
        ];
        let m = on(&["pod"], None);
        let and = vector_vector(BinOp::And, false, Some(&m), l.clone(), r.clone(), 2).unwrap();
        assert_eq!(
            and,
            vec![series(&[("pod", "a"), ("x", "1")], &[None, Some(1.0)])]
        );
        let unless =
            vector_vector(BinOp::Unless, false, Some(&m), l.clone(), r.clone(), 2).unwrap();
        assert_eq!(
            unless,
            vec![
                series(&[("pod", "a"), ("x", "1")], &[Some(1.0), None]),
                series(&[("pod", "b"), ("x", "1")], &[Some(2.0), None]),
            ]
        );
        // pod=a of the right is shadowed by the left's pod=a (its only value is at a step
        // where the left has one).
        let or = vector_vector(BinOp::Or, false, Some(&m), l.clone(), r, 2).unwrap();
        assert_eq!(
            or,
            vec![
                l[0].clone(),
                l[1].clone(),
                series(&[("pod", "c"), ("x", "2")], &[Some(7.0), Some(7.0)]),
            ]
        );
    }
}
