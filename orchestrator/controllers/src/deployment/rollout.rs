//! The arithmetic of a rollout, free of IO so it can be tested case by case: how far the new
//! ReplicaSet may grow (maxSurge), how far the old ones may shrink (maxUnavailable), and how a
//! resize is shared among ReplicaSets mid-rollout. Mirrors upstream's deployment utilities.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// One ReplicaSet as the rollout sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rs {
    pub(crate) name: String,
    /// `spec.replicas`.
    pub(crate) replicas: i32,
    /// `status.availableReplicas`.
    pub(crate) available: i32,
}

fn scaled(value: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let json = match value {
        Some(IntOrString::Int(i)) => serde_json::json!(i),
        Some(IntOrString::String(s)) => serde_json::json!(s),
        None => serde_json::json!(default),
    };
    skiff_api::intstr::scaled_value(&json, i64::from(total), round_up)
        .map(|v| v.clamp(0, i64::from(i32::MAX)) as i32)
        .unwrap_or(0)
}

/// (maxSurge, maxUnavailable) for a RollingUpdate deployment: surge rounds up, unavailable
/// rounds down, and if both come out 0 unavailable becomes 1 so the rollout can move
/// (upstream's `ResolveFenceposts`). Recreate deployments get (0, 0).
pub(crate) fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let strategy = spec.and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(
        rolling.and_then(|r| r.max_surge.as_ref()),
        "25%",
        desired,
        true,
    );
    let unavailable = scaled(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        desired,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// The size the new ReplicaSet may grow to now: total pods stay within desired + maxSurge.
pub(crate) fn new_rs_target(desired: i32, max_surge: i32, all: &[Rs], new: &Rs) -> i32 {
    let current: i32 = all.iter().map(|r| r.replicas).sum();
    let max_total = desired + max_surge;
    if current >= max_total {
        return new.replicas;
    }
    let up = (max_total - current).min(desired - new.replicas).max(0);
    new.replicas + up
}

/// How many old pods may go now without availability dropping below desired − maxUnavailable.
/// Unhealthy old ReplicaSets are shrunk first (they cost no availability), then the oldest
/// healthy ones. Returns the new sizes of `old` (same order, oldest first).
pub(crate) fn old_rs_targets(
    desired: i32,
    max_unavailable: i32,
    all: &[Rs],
    new: &Rs,
    old: &[Rs],
) -> Vec<i32> {
    let mut sizes: Vec<i32> = old.iter().map(|r| r.replicas).collect();
    let old_total: i32 = sizes.iter().sum();
    if old_total == 0 {
        return sizes;
    }
    let all_total: i32 = all.iter().map(|r| r.replicas).sum();
    let min_available = desired - max_unavailable;
    let new_unavailable = (new.replicas - new.available).max(0);
    let mut budget = all_total - min_available - new_unavailable;
    if budget <= 0 {
        return sizes;
    }
    // Unhealthy replicas first: pods that are not available cost nothing to remove.
    for (i, rs) in old.iter().enumerate() {
        if budget == 0 {
            break;
        }
        let unhealthy = (sizes[i] - rs.available).max(0);
        let cut = unhealthy.min(budget);
        sizes[i] -= cut;
        budget -= cut;
    }
    // Then available old pods, as long as enough stay available overall.
    let available: i32 = all.iter().map(|r| r.available).sum();
    let mut allowed = (available - min_available).max(0);
    for (i, rs) in old.iter().enumerate() {
        if allowed == 0 {
            break;
        }
        let healthy = sizes[i].min(rs.available);
        let cut = healthy.min(allowed);
        sizes[i] -= cut;
        allowed -= cut;
    }
    sizes
}

/// Share a resize among mid-rollout ReplicaSets in proportion to their size (upstream's
/// proportional scaling): the total becomes `allowed`; growth goes newest first, shrinking
/// oldest first, and the remainder lands on the first in that order. `rss` is oldest first.
pub(crate) fn proportional(allowed: i32, rss: &[Rs]) -> Vec<i32> {
    let total: i32 = rss.iter().map(|r| r.replicas).sum();
    let mut sizes: Vec<i32> = rss.iter().map(|r| r.replicas).collect();
    let delta = allowed - total;
    if delta == 0 || total == 0 {
        return sizes;
    }
    let mut applied = 0;
    for (i, rs) in rss.iter().enumerate() {
        let share = (i64::from(delta) * i64::from(rs.replicas) / i64::from(total)) as i32;
        sizes[i] = (sizes[i] + share).max(0);
        applied += sizes[i] - rs.replicas;
    }
    let mut rest = delta - applied;
    let order: Vec<usize> = if delta > 0 {
        (0..rss.len()).rev().collect()
    } else {
        (0..rss.len()).collect()
    };
    for i in order {
        if rest == 0 {
            break;
        }
        if rest > 0 {
            sizes[i] += rest;
            rest = 0;
        } else {
            let cut = (-rest).min(sizes[i]);
            sizes[i] -= cut;
            rest += cut;
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(name: &str, replicas: i32, available: i32) -> Rs {
        Rs {
            name: name.into(),
            replicas,
            available,
        }
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&deploy(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deploy(1, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(
            fenceposts(&deploy(3, IntOrString::Int(0), IntOrString::Int(0))),
            (0, 1)
        );
        assert_eq!(
            fenceposts(&deploy(4, IntOrString::Int(1), IntOrString::Int(0))),
            (1, 0)
        );
        let mut recreate = deploy(3, IntOrString::Int(1), IntOrString::Int(1));
        recreate
            .spec
            .as_mut()
            .unwrap()
            .strategy
            .as_mut()
            .unwrap()
            .type_ = Some("Recreate".into());
        assert_eq!(fenceposts(&recreate), (0, 0));
        // Defaults: 25% each.
        let d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(fenceposts(&d), (1, 1));
    }

    #[test]
    fn new_rs_grows_within_surge() {
        let old = rs("old", 3, 3);
        let new = rs("new", 0, 0);
        let all = [old.clone(), new.clone()];
        assert_eq!(new_rs_target(3, 1, &all, &new), 1);
        let new = rs("new", 1, 0);
        let all = [old, new.clone()];
        assert_eq!(
            new_rs_target(3, 1, &all, &new),
            1,
            "already at desired+surge"
        );
    }

    #[test]
    fn max_unavailable_zero_keeps_every_available_pod() {
        // 3 old available, new has 1 not yet available: nothing old may go.
        let old = [rs("old", 3, 3)];
        let new = rs("new", 1, 0);
        let all = [old[0].clone(), new.clone()];
        assert_eq!(old_rs_targets(3, 0, &all, &new, &old), vec![3]);
        // The new pod became available: one old pod may go.
        let new = rs("new", 1, 1);
        let all = [old[0].clone(), new.clone()];
        assert_eq!(old_rs_targets(3, 0, &all, &new, &old), vec![2]);
    }

    #[test]
    fn unhealthy_old_pods_go_first() {
        let old = [rs("older", 2, 0), rs("old", 2, 2)];
        let new = rs("new", 1, 1);
        let all = [old[0].clone(), old[1].clone(), new.clone()];
        // desired 4, maxUnavailable 1: min available 3; available 3 → budget for unhealthy
        // only (total 5 − 3 − 0 = 2).
        assert_eq!(old_rs_targets(4, 1, &all, &new, &old), vec![0, 2]);
    }

    #[test]
    fn proportional_scaling_keeps_ratios() {
        let rss = [rs("a", 2, 2), rs("b", 4, 4)];
        assert_eq!(proportional(12, &rss), vec![4, 8]);
        assert_eq!(proportional(3, &rss), vec![1, 2]);
        // Remainder goes to the newest when growing.
        assert_eq!(proportional(7, &rss), vec![2, 5]);
        assert_eq!(proportional(6, &rss), vec![2, 4]);
    }
}
