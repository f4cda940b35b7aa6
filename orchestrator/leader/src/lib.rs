//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics, so several
//! schedulers or controller managers can run and exactly one of them acts.
//!
//! A candidate tries to take the Lease every `retry_period`. It may take it when nobody holds it,
//! or when the holder's record has not changed (as *this* candidate observed it, by its own
//! monotonic clock — never by comparing wall clocks across machines) for `lease_duration`. The
//! leader renews every `retry_period`; if it cannot renew for `renew_deadline` it stops leading
//! before anyone else may take over (`renew_deadline < lease_duration`). Every write is guarded
//! by the Lease's resourceVersion, so two candidates cannot both win a race. On shutdown the
//! leader releases the Lease so a standby takes over at once.
//!
//! kube-lease-manager (the maintained crate for kube 5) was considered: it renews only near expiry
//! and keeps reporting leadership while the API server is unreachable, which is not the
//! fencing behaviour scheduler and controller-manager users expect; this module is small instead.

mod metrics;

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

pub use metrics::LeaderMetrics;

/// Where the Lease is and how long its terms are (kube-scheduler's defaults: 15 s / 10 s / 2 s).
#[derive(Debug, Clone)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease (`kube-system`).
    pub namespace: String,
    /// Name of the Lease (`kube-scheduler`, `kube-controller-manager`).
    pub name: String,
    /// This candidate's identity, unique among candidates.
    pub identity: String,
    /// How long a standby waits, after last seeing the record change, before taking over.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// Upstream's defaults for the Lease `kube-system/<name>`.
    pub fn new(name: &str, identity: String) -> Self {
        LeaderElectionConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// `<hostname>_<random>`, as upstream components name themselves in the Lease.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}_{:016x}", rand::random::<u64>())
}

/// The Lease spec as last observed, and when (by this process's clock) it last changed.
#[derive(Debug, Default)]
struct Observed {
    spec: Option<LeaseSpec>,
    changed_at: Option<Instant>,
}

impl Observed {
    fn see(&mut self, spec: &LeaseSpec, now: Instant) {
        if self.spec.as_ref() != Some(spec) {
            self.spec = Some(spec.clone());
            self.changed_at = Some(now);
        }
    }
}

/// What a candidate may do with a Lease it just read.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Someone else holds it and was seen renewing recently.
    HeldByOther(String),
    /// Write this spec (take over or renew).
    Write(LeaseSpec),
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// The pure core: given the current spec and when it was last seen changing, may `identity` hold
/// the Lease, and with what record?
fn decide(
    current: &LeaseSpec,
    observed_changed_at: Instant,
    now: Instant,
    config: &LeaderElectionConfig,
) -> Decision {
    let holder = current.holder_identity.clone().unwrap_or_default();
    let ours = holder == config.identity;
    let fresh = now.duration_since(observed_changed_at) < config.lease_duration;
    if !holder.is_empty() && !ours && fresh {
        return Decision::HeldByOther(holder);
    }
    let stamp = micro_now();
    let transitions = current.lease_transitions.unwrap_or(0);
    Decision::Write(LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.lease_duration.as_secs().max(1) as i32),
        acquire_time: if ours {
            current.acquire_time.clone().or(Some(stamp.clone()))
        } else {
            Some(stamp.clone())
        },
        renew_time: Some(stamp),
        lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
        ..LeaseSpec::default()
    })
}

/// One attempt to acquire or renew. `Ok(true)` when we hold the Lease afterwards.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderElectionConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let now = Instant::now();
    let lease = match api.get_opt(&config.name).await? {
        Some(lease) => lease,
        None => {
            let Decision::Write(mut spec) = decide(&LeaseSpec::default(), now, now, config) else {
                unreachable!("a Lease with no holder is free");
            };
            // The first holder of a new Lease is not a transition.
            spec.lease_transitions = Some(0);
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some(config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    observed.see(&spec, now);
                    Ok(true)
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
    };
    let current = lease.spec.clone().unwrap_or_default();
    observed.see(&current, now);
    let changed_at = observed.changed_at.unwrap_or(now);
    match decide(&current, changed_at, now, config) {
        Decision::HeldByOther(_) => Ok(false),
        Decision::Write(spec) => {
            let mut updated = lease;
            updated.spec = Some(spec.clone());
            match api
                .replace(&config.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => {
                    observed.see(&spec, now);
                    Ok(true)
                }
                // Someone else wrote first (resourceVersion conflict): not ours this round.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Give the Lease up (holder empty, duration 1 s) so a standby takes over without waiting.
async fn release(api: &Api<Lease>, config: &LeaderElectionConfig) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(micro_now());
    spec.acquire_time = Some(micro_now());
    api.replace(&config.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

fn lease_ref(config: &LeaderElectionConfig) -> ObjectReference {
    ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: Some(config.name.clone()),
        namespace: Some(config.namespace.clone()),
        ..ObjectReference::default()
    }
}

/// Campaign for the Lease until `shutdown`; whenever this candidate leads, run `lead` with a
/// token that is cancelled when leadership is lost (or on shutdown), and wait for it to return
/// before campaigning again. On shutdown the Lease is released.
pub async fn run<F, Fut>(
    client: kube::Client,
    config: LeaderElectionConfig,
    metrics: LeaderMetrics,
    shutdown: CancellationToken,
    mut lead: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let span =
        tracing::info_span!("leader_election", lease = %config.name, identity = %config.identity);
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let events = skiff_events::start(client, "leader-election", String::new(), shutdown.clone());
    metrics.set_leading(&config.name, false);
    let mut observed = Observed::default();
    let mut logged_holder = String::new();
    loop {
        // Campaign.
        let acquired = loop {
            match tracing::Instrument::instrument(
                try_acquire_or_renew(&api, &config, &mut observed),
                span.clone(),
            )
            .await
            {
                Ok(true) => break true,
                Ok(false) => {
                    let holder = observed
                        .spec
                        .as_ref()
                        .and_then(|s| s.holder_identity.clone())
                        .unwrap_or_default();
                    if holder != logged_holder {
                        span.in_scope(
                            || tracing::info!(%holder, "another candidate leads; standing by"),
                        );
                        logged_holder = holder;
                    }
                }
                Err(e) => span.in_scope(
                    || tracing::warn!(error = %e, "leader election: cannot reach the Lease"),
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = tokio::time::sleep(config.retry_period) => {}
            }
        };
        if !acquired {
            return;
        }
        span.in_scope(|| tracing::info!("became leader"));
        metrics.set_leading(&config.name, true);
        events.object(
            lease_ref(&config),
            "Normal",
            "LeaderElection",
            format!("{} became leader", config.identity),
        );
        let term = shutdown.child_token();
        let mut work = tokio::spawn(lead(term.clone()));
        let mut last_renew = Instant::now();
        let mut finished = false;
        // Lead, renewing every retry period, until the work ends, renewal fails for too long,
        // or shutdown.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut work => { finished = true; break }
                _ = tokio::time::sleep(config.retry_period) => {}
            }
            match try_acquire_or_renew(&api, &config, &mut observed).await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    span.in_scope(|| tracing::error!("leadership taken by another candidate"));
                    break;
                }
                Err(e) => span.in_scope(|| tracing::warn!(error = %e, "renewing the Lease failed")),
            }
            if last_renew.elapsed() >= config.renew_deadline {
                span.in_scope(|| {
                    tracing::error!(
                        "could not renew the Lease within the renew deadline; stepping down"
                    )
                });
                break;
            }
        }
        term.cancel();
        if !finished {
            let _ = work.await;
        }
        metrics.set_leading(&config.name, false);
        if shutdown.is_cancelled() {
            if let Err(e) = release(&api, &config).await {
                span.in_scope(|| tracing::warn!(error = %e, "releasing the Lease failed"));
            }
            return;
        }
        span.in_scope(|| tracing::warn!("stopped leading; campaigning again"));
        observed = Observed::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(identity: &str) -> LeaderElectionConfig {
        LeaderElectionConfig::new("kube-scheduler", identity.into())
    }

    fn held_by(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(transitions),
            acquire_time: Some(MicroTime(jiff::Timestamp::UNIX_EPOCH)),
            renew_time: Some(micro_now()),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_fresh_holder_keeps_the_lease() {
        let now = Instant::now();
        let d = decide(
            &held_by("a", 0),
            now,
            now + Duration::from_secs(14),
            &config("b"),
        );
        assert_eq!(d, Decision::HeldByOther("a".into()));
    }

    #[test]
    fn a_silent_holder_is_replaced_after_the_lease_duration_and_transitions_count() {
        let now = Instant::now();
        let Decision::Write(spec) = decide(
            &held_by("a", 2),
            now,
            now + Duration::from_secs(15),
            &config("b"),
        ) else {
            panic!("b should take over");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(3));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_ne!(
            spec.acquire_time,
            Some(MicroTime(jiff::Timestamp::UNIX_EPOCH))
        );
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let now = Instant::now();
        let Decision::Write(spec) = decide(&held_by("a", 2), now, now, &config("a")) else {
            panic!("the holder renews");
        };
        assert_eq!(spec.lease_transitions, Some(2));
        assert_eq!(
            spec.acquire_time,
            Some(MicroTime(jiff::Timestamp::UNIX_EPOCH))
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let now = Instant::now();
        let mut released = held_by("a", 1);
        released.holder_identity = None;
        let Decision::Write(spec) = decide(&released, now, now, &config("b")) else {
            panic!("a released lease is free");
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(spec.lease_transitions, Some(2));
    }

    #[test]
    fn observation_time_only_moves_when_the_record_changes() {
        let t0 = Instant::now();
        let mut observed = Observed::default();
        let spec = held_by("a", 0);
        observed.see(&spec, t0);
        observed.see(&spec, t0 + Duration::from_secs(5));
        assert_eq!(observed.changed_at, Some(t0));
        let mut renewed = spec.clone();
        renewed.renew_time = Some(MicroTime(jiff::Timestamp::UNIX_EPOCH));
        observed.see(&renewed, t0 + Duration::from_secs(6));
        assert_eq!(observed.changed_at, Some(t0 + Duration::from_secs(6)));
    }
}
