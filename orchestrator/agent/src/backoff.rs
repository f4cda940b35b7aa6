//! Container restart backoff, as kubelet computes it: the first crash restarts at once; after
//! that a container waits 10 s, then 20 s, 40 s… up to 5 min after each exit; an entry unused
//! for 10 min is forgotten, so a container that ran cleanly that long starts from scratch.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;

/// Initial backoff.
pub(crate) const INITIAL: Duration = Duration::from_secs(10);
/// Maximum backoff (kubelet's `MaxContainerBackOff`).
pub(crate) const MAX: Duration = Duration::from_secs(300);

struct Entry {
    delay: Duration,
    last_update: Timestamp,
}

/// Backoff entries keyed by container (pod uid + name).
#[derive(Default)]
pub(crate) struct Backoff {
    entries: HashMap<String, Entry>,
    initial: Option<Duration>,
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_millis(
        u64::try_from((to.as_millisecond() - from.as_millisecond()).max(0)).unwrap_or(0),
    )
}

impl Backoff {
    /// Backoff with a different initial delay (tests shorten it).
    pub(crate) fn with_initial(initial: Duration) -> Self {
        Backoff {
            entries: HashMap::new(),
            initial: Some(initial),
        }
    }

    fn initial(&self) -> Duration {
        self.initial.unwrap_or(INITIAL)
    }

    fn expired(&self, e: &Entry, now: Timestamp) -> bool {
        elapsed(e.last_update, now) > MAX * 2
    }

    /// If the container that finished at `finished` must still wait, how long.
    pub(crate) fn remaining(
        &self,
        key: &str,
        finished: Timestamp,
        now: Timestamp,
    ) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, now) {
            return None;
        }
        let waited = elapsed(finished, now);
        (waited < e.delay).then(|| e.delay - waited)
    }

    /// The current delay of an entry (for the CrashLoopBackOff message).
    pub(crate) fn delay(&self, key: &str) -> Duration {
        self.entries.get(key).map_or(self.initial(), |e| e.delay)
    }

    /// Record a restart of the container that finished at `finished`.
    pub(crate) fn next(&mut self, key: &str, finished: Timestamp) {
        let initial = self.initial();
        let fresh = self
            .entries
            .get(key)
            .is_none_or(|e| self.expired(e, finished));
        let delay = if fresh {
            initial
        } else {
            (self.entries[key].delay * 2).min(MAX)
        };
        self.entries.insert(
            key.to_owned(),
            Entry {
                delay,
                last_update: finished,
            },
        );
    }

    /// Forget a container (its pod is gone).
    pub(crate) fn forget_prefix(&mut self, prefix: &str) {
        self.entries.retain(|k, _| !k.starts_with(prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn doubles_to_five_minutes_and_resets() {
        let mut b = Backoff::default();
        assert_eq!(
            b.remaining("c", at(0), at(0)),
            None,
            "first crash restarts at once"
        );
        b.next("c", at(0));
        assert_eq!(b.remaining("c", at(1), at(2)), Some(Duration::from_secs(9)));
        b.next("c", at(12));
        assert_eq!(b.delay("c"), Duration::from_secs(20));
        for i in 0..10 {
            b.next("c", at(100 + i));
        }
        assert_eq!(b.delay("c"), MAX);
        // Ten clean minutes later the entry is forgotten.
        assert_eq!(b.remaining("c", at(2000), at(2001)), None);
        b.next("c", at(2000));
        assert_eq!(b.delay("c"), INITIAL);
    }
}
