//! From a proposal to the replica count the HPA sets: stabilization over recent
//! recommendations, then either the legacy rate limit (no `behavior`: at most max(2×, 4) up, a
//! 5-minute window down) or the `behavior` policies, as upstream's horizontal controller does.
//! Each outcome carries the reasons the AbleToScale and ScalingLimited conditions show.

use std::time::Duration;

use jiff::Timestamp;

/// A recommendation made at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recommendation {
    pub at: Timestamp,
    pub replicas: i32,
}

/// A scale change made at some time (positive for both directions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScaleEvent {
    pub at: Timestamp,
    pub change: i32,
}

/// What the controller remembers per HPA.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct History {
    pub recommendations: Vec<Recommendation>,
    pub up_events: Vec<ScaleEvent>,
    pub down_events: Vec<ScaleEvent>,
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Select {
    Max,
    Min,
    Disabled,
}

/// One policy: `Pods` (absolute) or `Percent`, per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    pub percent: bool,
    pub value: i32,
    pub period: Duration,
}

/// The rules of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rules {
    pub window: Duration,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// The result of normalization and the condition texts it implies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub replicas: i32,
    pub able_reason: &'static str,
    pub able_message: &'static str,
    pub limited: bool,
    pub limited_reason: &'static str,
    pub limited_message: &'static str,
}

const READY: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const DOWN_STABILIZED: (&str, &str) = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: (&str, &str) = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

fn since(now: Timestamp, d: Duration) -> Timestamp {
    now.checked_sub(jiff::SignedDuration::try_from(d).unwrap_or_default())
        .unwrap_or(now)
}

fn outcome(
    replicas: i32,
    stabilized: i32,
    able: (&'static str, &'static str),
    limit: (&'static str, &'static str),
) -> Outcome {
    Outcome {
        replicas,
        able_reason: able.0,
        able_message: able.1,
        limited: replicas != stabilized,
        limited_reason: limit.0,
        limited_message: limit.1,
    }
}

/// Without `behavior`: the highest recommendation of the downscale window, then clamped to
/// `[min, min(max, max(2×current, 4))]`.
pub(crate) fn legacy(
    history: &mut History,
    now: Timestamp,
    current: i32,
    desired: i32,
    (min, max): (i32, i32),
    downscale_window: Duration,
) -> Outcome {
    let cutoff = since(now, downscale_window);
    let mut stabilized = desired;
    let mut old = None;
    for (i, r) in history.recommendations.iter().enumerate() {
        if r.at < cutoff {
            old = Some(i);
        } else if r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    let record = Recommendation {
        at: now,
        replicas: desired,
    };
    match old {
        Some(i) => history.recommendations[i] = record,
        None => history.recommendations.push(record),
    }
    let able = if stabilized != desired {
        DOWN_STABILIZED
    } else {
        READY
    };
    let up_limit = (2 * current).max(4);
    let allowed_max = max.min(up_limit);
    let (replicas, limit) = if stabilized < min {
        (min, TOO_FEW)
    } else if stabilized > allowed_max {
        (
            allowed_max,
            if max > up_limit { UP_LIMIT } else { TOO_MANY },
        )
    } else {
        (stabilized, WITHIN)
    };
    outcome(replicas, stabilized, able, limit)
}

fn changed_within(events: &[ScaleEvent], now: Timestamp, period: Duration) -> i32 {
    let cutoff = since(now, period);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .sum()
}

fn up_limit(current: i32, history: &History, now: Timestamp, rules: &Rules) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current - changed_within(&history.up_events, now, p.period)
            + changed_within(&history.down_events, now, p.period);
        if p.percent {
            (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
        } else {
            start + p.value
        }
    });
    match rules.select {
        Select::Min => proposals.min(),
        _ => proposals.max(),
    }
    .unwrap_or(current)
}

fn down_limit(current: i32, history: &History, now: Timestamp, rules: &Rules) -> i32 {
    if rules.select == Select::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = current + changed_within(&history.down_events, now, p.period)
            - changed_within(&history.up_events, now, p.period);
        if p.percent {
            (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32
        } else {
            start - p.value
        }
    });
    // "Max" picks the policy allowing the biggest change: the lowest count when going down.
    match rules.select {
        Select::Min => proposals.max(),
        _ => proposals.min(),
    }
    .unwrap_or(current)
}

/// With `behavior`: stabilize within each direction's window, then limit the rate by the
/// policies over the recorded scale events.
pub(crate) fn with_behavior(
    history: &mut History,
    now: Timestamp,
    current: i32,
    desired: i32,
    (min, max): (i32, i32),
    up: &Rules,
    down: &Rules,
) -> Outcome {
    let (up_cutoff, down_cutoff) = (since(now, up.window), since(now, down.window));
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut old = None;
    for (i, r) in history.recommendations.iter().enumerate() {
        if r.at > up_cutoff {
            up_rec = up_rec.min(r.replicas);
        }
        if r.at > down_cutoff {
            down_rec = down_rec.max(r.replicas);
        }
        if r.at < up_cutoff && r.at < down_cutoff {
            old = Some(i);
        }
    }
    let stabilized = current.max(up_rec).min(down_rec);
    let record = Recommendation {
        at: now,
        replicas: desired,
    };
    match old {
        Some(i) => history.recommendations[i] = record,
        None => history.recommendations.push(record),
    }
    let able = if stabilized == desired {
        READY
    } else if desired >= current {
        UP_STABILIZED
    } else {
        DOWN_STABILIZED
    };
    let (replicas, limit) = if stabilized > current {
        let limit = up_limit(current, history, now, up).max(current);
        let (allowed, why) = if max > limit {
            (limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if stabilized > allowed {
            (allowed, why)
        } else {
            (stabilized, WITHIN)
        }
    } else if stabilized < current {
        let limit = down_limit(current, history, now, down).min(current);
        let (allowed, why) = if min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if stabilized < allowed {
            (allowed, why)
        } else {
            (stabilized, WITHIN)
        }
    } else {
        (stabilized, WITHIN)
    };
    outcome(replicas, stabilized, able, limit)
}

/// Remember a rescale for the rate policies; events older than every policy period go.
pub(crate) fn record_scale(
    history: &mut History,
    now: Timestamp,
    from: i32,
    to: i32,
    longest: Duration,
) {
    let cutoff = since(now, longest);
    history.up_events.retain(|e| e.at > cutoff);
    history.down_events.retain(|e| e.at > cutoff);
    if to > from {
        history.up_events.push(ScaleEvent {
            at: now,
            change: to - from,
        });
    } else if to < from {
        history.down_events.push(ScaleEvent {
            at: now,
            change: from - to,
        });
    }
}

/// Upstream's defaults: up = no window, the larger of +4 pods or +100 % per 15 s; down = the
/// controller's downscale window, −100 % per 15 s.
pub(crate) fn default_rules(up: bool, downscale_window: Duration) -> Rules {
    let period = Duration::from_secs(15);
    if up {
        Rules {
            window: Duration::ZERO,
            select: Select::Max,
            policies: vec![
                Policy {
                    percent: false,
                    value: 4,
                    period,
                },
                Policy {
                    percent: true,
                    value: 100,
                    period,
                },
            ],
        }
    } else {
        Rules {
            window: downscale_window,
            select: Select::Max,
            policies: vec![Policy {
                percent: true,
                value: 100,
                period,
            }],
        }
    }
}

/// The rules of `spec.behavior.scaleUp|scaleDown`, defaults filled in.
pub(crate) fn rules_from_spec(
    spec: Option<&k8s_openapi::api::autoscaling::v2::HPAScalingRules>,
    up: bool,
    downscale_window: Duration,
) -> Rules {
    let defaults = default_rules(up, downscale_window);
    let Some(spec) = spec else { return defaults };
    let window = spec
        .stabilization_window_seconds
        .map_or(defaults.window, |s| Duration::from_secs(s.max(0) as u64));
    let select = match spec.select_policy.as_deref() {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    };
    let policies = match &spec.policies {
        Some(p) if !p.is_empty() => p
            .iter()
            .map(|p| Policy {
                percent: p.type_ == "Percent",
                value: p.value,
                period: Duration::from_secs(p.period_seconds.max(1) as u64),
            })
            .collect(),
        _ => defaults.policies,
    };
    Rules {
        window,
        select,
        policies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: Duration = Duration::from_secs(300);

    fn now() -> Timestamp {
        "2026-12-05T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Timestamp {
        now() - jiff::SignedDuration::from_secs(secs)
    }

    fn seeded(current: i32) -> History {
        History {
            recommendations: vec![Recommendation {
                at: now(),
                replicas: current,
            }],
            ..History::default()
        }
    }

    #[test]
    fn case_c_first_reconcile_holds_at_the_seed() {
        let mut h = seeded(4);
        let o = legacy(&mut h, now(), 4, 3, (1, 10), FIVE_MIN);
        assert_eq!((o.replicas, o.able_reason), (4, "ScaleDownStabilized"));
    }

    #[test]
    fn case_e_default_behavior_limits_the_rate() {
        let mut h = seeded(10);
        let up = default_rules(true, FIVE_MIN);
        let down = default_rules(false, FIVE_MIN);
        let o = with_behavior(&mut h, now(), 10, 30, (1, 50), &up, &down);
        assert_eq!(
            (o.replicas, o.limited, o.limited_reason),
            (20, true, "ScaleUpLimit")
        );
    }

    #[test]
    fn case_f_legacy_versus_behavior() {
        let mut h = seeded(1);
        assert_eq!(legacy(&mut h, now(), 1, 10, (1, 50), FIVE_MIN).replicas, 4);
        let mut h = seeded(1);
        let (up, down) = (
            default_rules(true, FIVE_MIN),
            default_rules(false, FIVE_MIN),
        );
        assert_eq!(
            with_behavior(&mut h, now(), 1, 10, (1, 50), &up, &down).replicas,
            5
        );
    }

    #[test]
    fn case_g_percent_policy_over_a_period() {
        let down = Rules {
            window: Duration::ZERO,
            select: Select::Max,
            policies: vec![Policy {
                percent: true,
                value: 10,
                period: Duration::from_secs(60),
            }],
        };
        let up = default_rules(true, FIVE_MIN);
        let mut h = History::default();
        let o = with_behavior(&mut h, now(), 20, 5, (1, 50), &up, &down);
        assert_eq!((o.replicas, o.limited_reason), (18, "ScaleDownLimit"));
        // Two pods went 30 s ago: the period started at 20, so 18 is already the limit.
        let mut h = History {
            down_events: vec![ScaleEvent {
                at: ago(30),
                change: 2,
            }],
            ..History::default()
        };
        let o = with_behavior(&mut h, now(), 18, 5, (1, 50), &up, &down);
        assert_eq!(o.replicas, 18);
    }

    #[test]
    fn case_h_down_window_applies_the_highest_recommendation() {
        let mut h = History {
            recommendations: vec![
                Recommendation {
                    at: ago(200),
                    replicas: 8,
                },
                Recommendation {
                    at: ago(100),
                    replicas: 6,
                },
                Recommendation {
                    at: ago(50),
                    replicas: 7,
                },
            ],
            ..History::default()
        };
        let (up, down) = (
            default_rules(true, FIVE_MIN),
            default_rules(false, FIVE_MIN),
        );
        let o = with_behavior(&mut h, now(), 8, 5, (1, 50), &up, &down);
        assert_eq!((o.replicas, o.able_reason), (8, "ScaleDownStabilized"));
        assert_eq!(h.recommendations.len(), 4, "the new recommendation is kept");
    }

    #[test]
    fn legacy_clamps_and_says_why() {
        let mut h = History::default();
        let o = legacy(&mut h, now(), 4, 0, (2, 10), Duration::ZERO);
        assert_eq!(
            (o.replicas, o.limited_reason, o.limited),
            (2, "TooFewReplicas", true)
        );
        let o = legacy(&mut h, now(), 8, 40, (1, 10), Duration::ZERO);
        assert_eq!((o.replicas, o.limited_reason), (10, "TooManyReplicas"));
        let o = legacy(&mut h, now(), 3, 40, (1, 100), Duration::ZERO);
        assert_eq!((o.replicas, o.limited_reason), (6, "ScaleUpLimit"));
        // Old recommendations leave the window and are overwritten, not accumulated.
        let mut h = History {
            recommendations: vec![Recommendation {
                at: ago(400),
                replicas: 9,
            }],
            ..History::default()
        };
        let o = legacy(&mut h, now(), 5, 3, (1, 10), FIVE_MIN);
        assert_eq!((o.replicas, o.able_reason), (3, "ReadyForNewScale"));
        assert_eq!(
            h.recommendations,
            vec![Recommendation {
                at: now(),
                replicas: 3
            }]
        );
    }

    #[test]
    fn disabled_direction_never_moves() {
        let mut h = History::default();
        let up = Rules {
            select: Select::Disabled,
            ..default_rules(true, FIVE_MIN)
        };
        let down = default_rules(false, Duration::ZERO);
        let o = with_behavior(&mut h, now(), 3, 9, (1, 50), &up, &down);
        assert_eq!(o.replicas, 3);
    }

    #[test]
    fn scale_events_age_out() {
        let mut h = History::default();
        record_scale(&mut h, ago(100), 2, 6, Duration::from_secs(60));
        record_scale(&mut h, now(), 6, 4, Duration::from_secs(60));
        assert!(h.up_events.is_empty(), "older than the longest period");
        assert_eq!(
            h.down_events,
            vec![ScaleEvent {
                at: now(),
                change: 2
            }]
        );
    }
}
