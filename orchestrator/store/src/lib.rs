//! Skiff's key-value store with etcd semantics.
//!
//! One global revision increments on every write and becomes the written object's
//! `metadata.resourceVersion`. Reads can be made at the current revision or an older one that has
//! not been compacted; writes are compare-and-swap on a key's mod revision; watches replay history
//! from a revision and then follow live writes.
//!
//! [`Store`] is the contract; [`SqliteStore`] the embedded backend. The `testsuite` feature
//! exposes a conformance suite any backend must pass (an etcd backend will run the same suite).

mod metrics;
mod sqlite;
#[cfg(feature = "testsuite")]
pub mod testsuite;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub use metrics::StoreMetrics;
pub use sqlite::{SqliteStore, SqliteStoreConfig};

/// A global store revision (etcd's revision, Kubernetes' resourceVersion).
pub type Revision = i64;

/// Store errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `create` found the key present.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key is absent.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The key's mod revision is not the expected one.
    #[error("key {key} was modified: expected revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The revision the caller expected.
        expected: Revision,
        /// The key's current mod revision.
        actual: Revision,
    },
    /// The requested revision is older than the compacted revision.
    #[error("required revision {requested} has been compacted (compacted revision {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still readable.
        compacted: Revision,
    },
    /// The requested revision is newer than the current one.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// The backend failed (I/O, corruption, shutdown).
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// `Result` with the store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (for a deletion event, the last value before the deletion).
    pub value: Bytes,
    /// Revision at which the key was created.
    pub create_revision: Revision,
    /// Revision of this version (for a deletion event, the deletion's revision).
    pub mod_revision: Revision,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change seen by a watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The new version (or, for a delete, the last value at the deletion's revision).
    pub kv: KeyValue,
    /// The previous version, when it still exists in history.
    pub prev: Option<KeyValue>,
}

/// A batch of events a watcher receives, with the revision the watch has caught up to. An empty
/// batch is a progress notification: no matching change up to `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchResponse {
    /// Matching events in revision order.
    pub events: Vec<Event>,
    /// Every change up to this revision has been delivered.
    pub revision: Revision,
}

/// A stream of watch responses; it ends with an error if the watch falls behind compaction.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse>> + Send>>;

/// A range read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeRequest {
    /// Keys starting with this prefix.
    pub prefix: String,
    /// Start strictly after this key (a continue token), within the prefix.
    pub start_after: Option<String>,
    /// At most this many keys; 0 = no limit.
    pub limit: usize,
    /// Read at this revision; 0 = the current revision.
    pub revision: Revision,
}

/// The result of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// Keys in byte order.
    pub kvs: Vec<KeyValue>,
    /// The revision the read was made at.
    pub revision: Revision,
    /// Whether more keys follow under the prefix.
    pub more: bool,
}

/// A key-value store with etcd semantics.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest committed revision.
    fn current_revision(&self) -> Revision;

    /// The oldest revision still readable and watchable.
    fn compacted_revision(&self) -> Revision;

    /// The current value of a key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys under a prefix, at the current or a past revision.
    async fn range(&self, request: RangeRequest) -> Result<RangeResult>;

    /// Create a key that must not exist.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;

    /// Replace a key's value if its mod revision is `expected`.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<KeyValue>;

    /// Delete a key, if its mod revision is `expected` when given. Returns the deleted value with
    /// `mod_revision` set to the deletion's revision.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;

    /// Changes under `prefix` after `from` (exclusive), then live changes.
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream>;

    /// Forget history before `revision` (keeping each key's version at `revision`).
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// The smallest key greater than every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    // Every byte was 0xff: no upper bound.
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
