//! Generic object storage with Kubernetes semantics on top of the [`Store`]: create with system
//! metadata, compare-and-swap updates retried when the client set no precondition, graceful
//! deletion and finalizers, and paginated filtered lists. Every resource goes through here
//! (upstream's `genericregistry.Store`).
//!
//! Objects here are in their storage version with `resourceVersion` set; handlers convert to the
//! served version.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use skiff_api::ResourceInfo;
use skiff_api::selector::{FieldSelector, LabelSelector};
use skiff_api::time::{format_rfc3339, now_rfc3339};
use skiff_store::{Error as StoreError, RangeRequest, Revision};

use crate::admission;
use crate::codec::{decode_stored, encode_for_store, set_resource_version};
use crate::error::{ApiError, ApiResult, from_store};
use crate::state::AppState;

/// Attempts of an update whose client gave no resourceVersion before giving up on contention.
const MAX_UPDATE_ATTEMPTS: usize = 16;

/// Operations on one resource's objects.
pub(crate) struct Objects<'a> {
    state: &'a AppState,
    /// The resource in its storage version.
    pub info: &'a ResourceInfo,
}

/// The outcome of a delete.
pub(crate) enum Deleted {
    /// The object is gone; this was its last state.
    Gone(Value),
    /// Deletion started (finalizers or a grace period); this is the object now.
    Pending(Value),
}

/// What a list returns.
pub(crate) struct ListResult {
    /// Matching objects (storage version).
    pub items: Vec<Value>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// Token for the next page, if any.
    pub continue_token: Option<String>,
}

/// List parameters.
#[derive(Default)]
pub(crate) struct ListOptions {
    /// Label filter.
    pub labels: LabelSelector,
    /// Field filter.
    pub fields: FieldSelector,
    /// Page size; 0 = everything.
    pub limit: usize,
    /// Continue token from a previous page.
    pub continue_token: Option<String>,
    /// Read at this exact revision (`resourceVersionMatch=Exact`).
    pub exact_revision: Option<Revision>,
}

/// `DeleteOptions` fields we honour.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`: Orphan, Background, Foreground.
    pub propagation_policy: Option<String>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn decode_continue(token: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

fn encode_continue(rv: Revision, start: &str) -> String {
    let json = serde_json::to_vec(&ContinueToken {
        rv,
        start: start.to_owned(),
    })
    .expect("serializable");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// `metadata.name` of an object.
pub(crate) fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn finalizers_of(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether deleting this object must wait: metadata finalizers, or a namespace's spec
/// finalizers.
fn blocks_deletion(info: &ResourceInfo, obj: &Value) -> bool {
    !finalizers_of(obj).is_empty()
        || (info.kind == "Namespace"
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty()))
}

impl<'a> Objects<'a> {
    /// Operations on `info`'s objects (any served version: the storage version is used).
    pub(crate) fn new(state: &'a AppState, info: &ResourceInfo) -> Self {
        let storage = state.registry().storage_info(info);
        Objects {
            state,
            info: storage,
        }
    }

    fn key(&self, ns: Option<&str>, name: &str) -> String {
        self.info.storage_key(ns, name)
    }

    /// The object, or 404.
    pub(crate) async fn get(&self, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.state.store().get(&self.key(ns, name)).await {
            Ok(Some(kv)) => decode_stored(&kv),
            Ok(None) => Err(ApiError::not_found(self.info, name)),
            Err(e) => Err(from_store(e, self.info, name)),
        }
    }

    /// 404 unless the namespace exists; 403 while it terminates (creates only).
    pub(crate) async fn check_namespace(&self, ns: &str, creating: bool) -> ApiResult<()> {
        let namespaces = self
            .state
            .registry()
            .get("", "v1", "namespaces")
            .expect("registered");
        match self
            .state
            .store()
            .get(&namespaces.storage_key(None, ns))
            .await
        {
            Ok(Some(kv)) => {
                let object = decode_stored(&kv)?;
                let terminating = object.pointer("/status/phase") == Some(&json!("Terminating"))
                    || object.pointer("/metadata/deletionTimestamp").is_some();
                if creating && terminating {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                        self.info.qualified_plural(),
                        "",
                    )));
                }
                Ok(())
            }
            Ok(None) => Err(ApiError::not_found_plain("namespaces", ns)),
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    }

    /// Create an object (storage version, with name or generateName). Returns it as stored.
    pub(crate) async fn create(
        &self,
        ns: Option<&str>,
        mut obj: Value,
        dry_run: bool,
    ) -> ApiResult<Value> {
        if let Some(ns) = ns {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let generate = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let explicit = !name_of(&obj).is_empty();
        let attempts = if explicit || generate.is_none() { 1 } else { 8 };
        for attempt in 0..attempts {
            let mut candidate = obj.clone();
            if !explicit && let Some(prefix) = &generate {
                candidate["metadata"]["name"] = json!(admission::generate_name(prefix));
            }
            let prepared = admission::prepare_create(self.state, self.info, candidate).await?;
            let name = name_of(&prepared).to_owned();
            if dry_run {
                let mut out = prepared;
                set_resource_version(&mut out, self.state.store().current_revision());
                return Ok(out);
            }
            match self
                .state
                .store()
                .create(&self.key(ns, &name), encode_for_store(&prepared))
                .await
            {
                Ok(kv) => {
                    let mut out = prepared;
                    set_resource_version(&mut out, kv.mod_revision);
                    return Ok(out);
                }
                Err(StoreError::AlreadyExists { .. }) if !explicit && attempt + 1 < attempts => {
                    continue;
                }
                Err(e) => return Err(from_store(e, self.info, &name)),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Update an object through `mutate`, which gets the current object and returns the desired
    /// one plus the client's resourceVersion precondition, if it set one. Without a
    /// precondition, a concurrent write makes us re-read and retry (upstream's GuaranteedUpdate).
    pub(crate) async fn update<F>(
        &self,
        ns: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        dry_run: bool,
        mut mutate: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<(Value, Option<Revision>)>,
    {
        let key = self.key(ns, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self.get(ns, name).await?;
            let revision = current_revision(&current);
            let (desired, precondition) = mutate(&current)?;
            if let Some(p) = precondition
                && p != revision
            {
                return Err(ApiError::modified(self.info, name));
            }
            let mut new =
                admission::prepare_update(self.state, self.info, subresource, &current, desired)
                    .await?;
            set_resource_version(&mut new, revision);
            if new == current {
                return Ok(current);
            }
            if dry_run {
                return Ok(new);
            }
            // The last finalizer removed from an object being deleted: finish the deletion.
            if new.pointer("/metadata/deletionTimestamp").is_some()
                && !blocks_deletion(self.info, &new)
                && self.info.kind != "Pod"
            {
                return match self.state.store().delete(&key, Some(revision)).await {
                    Ok(kv) => {
                        set_resource_version(&mut new, kv.mod_revision);
                        Ok(new)
                    }
                    Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                    Err(e) => Err(from_store(e, self.info, name)),
                };
            }
            match self
                .state
                .store()
                .update(&key, encode_for_store(&new), revision)
                .await
            {
                Ok(kv) => {
                    set_resource_version(&mut new, kv.mod_revision);
                    return Ok(new);
                }
                Err(StoreError::Conflict { .. }) if precondition.is_none() => continue,
                Err(e) => return Err(from_store(e, self.info, name)),
            }
        }
        Err(ApiError::conflict(
            self.info,
            name,
            "the object is being modified too quickly; please try again",
        ))
    }

    /// Delete with preconditions, propagation finalizers, finalizers and pod grace periods.
    pub(crate) async fn delete(
        &self,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let key = self.key(ns, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let current = self.get(ns, name).await?;
            let revision = current_revision(&current);
            if let Some(uid) = &opts.precondition_uid {
                let actual = current
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if uid != actual {
                    return Err(ApiError::conflict(
                        self.info,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_resource_version
                && *rv != revision.to_string()
            {
                return Err(ApiError::conflict(
                    self.info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                    ),
                ));
            }
            let mut new = current.clone();
            let propagation_finalizer = match opts.propagation_policy.as_deref() {
                Some("Orphan") => Some("orphan"),
                Some("Foreground") => Some("foregroundDeletion"),
                _ => None,
            };
            if let Some(f) = propagation_finalizer {
                let mut finalizers = finalizers_of(&new);
                if !finalizers.iter().any(|x| x == f) {
                    finalizers.push(f.to_owned());
                    new["metadata"]["finalizers"] = json!(finalizers);
                }
            }
            let grace = self.grace_period(&current, opts);
            let already_deleting = current.pointer("/metadata/deletionTimestamp").is_some();
            let must_wait = blocks_deletion(self.info, &new) || grace > 0;
            if must_wait {
                if already_deleting && new == current {
                    return Ok(Deleted::Pending(current));
                }
                let when = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_secs(grace))
                    .unwrap_or_else(|_| jiff::Timestamp::now());
                if !already_deleting {
                    new["metadata"]["deletionTimestamp"] = json!(format_rfc3339(when));
                    new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                    if self.info.kind == "Namespace" {
                        new["status"]["phase"] = json!("Terminating");
                    }
                }
                if opts.dry_run {
                    return Ok(Deleted::Pending(new));
                }
                match self
                    .state
                    .store()
                    .update(&key, encode_for_store(&new), revision)
                    .await
                {
                    Ok(kv) => {
                        set_resource_version(&mut new, kv.mod_revision);
                        return Ok(Deleted::Pending(new));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(from_store(e, self.info, name)),
                }
            }
            if opts.dry_run {
                return Ok(Deleted::Gone(current));
            }
            match self.state.store().delete(&key, Some(revision)).await {
                Ok(kv) => {
                    let mut gone = current;
                    set_resource_version(&mut gone, kv.mod_revision);
                    return Ok(Deleted::Gone(gone));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(from_store(e, self.info, name)),
            }
        }
        Err(ApiError::conflict(
            self.info,
            name,
            "the object is being modified too quickly; please try again",
        ))
    }

    /// Pods bound to a node get a grace period (the agent finishes their deletion); everything
    /// else, and pods that never ran or already finished, goes at once.
    fn grace_period(&self, obj: &Value, opts: &DeleteOptions) -> i64 {
        if self.info.kind != "Pod" {
            return 0;
        }
        let bound = obj
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let phase = obj
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bound || phase == "Succeeded" || phase == "Failed" {
            return 0;
        }
        let default = obj
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30);
        let grace = opts.grace_period_seconds.unwrap_or(default).max(0);
        // A pod already being deleted keeps its (shorter) grace period.
        match obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
        {
            Some(existing) => existing.min(grace),
            None => grace,
        }
    }

    /// List objects under a namespace (or all), filtered, one page at a time.
    pub(crate) async fn list(&self, ns: Option<&str>, opts: &ListOptions) -> ApiResult<ListResult> {
        let prefix = self.info.storage_prefix_in(ns);
        let (mut start_after, mut revision) = match &opts.continue_token {
            Some(token) => {
                let t = decode_continue(token)?;
                if !t.start.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue key is not valid: wrong resource",
                    ));
                }
                (Some(t.start), t.rv)
            }
            None => (None, opts.exact_revision.unwrap_or(0)),
        };
        let filtering = !opts.labels.is_empty() || !opts.fields.is_empty();
        let mut items = Vec::new();
        loop {
            let want = if opts.limit == 0 {
                0
            } else {
                opts.limit - items.len()
            };
            // Filtering reads bigger pages so one client page needs few store reads.
            let page = if filtering && want > 0 {
                want.max(500)
            } else {
                want
            };
            let result = self
                .state
                .store()
                .range(RangeRequest { prefix: prefix.clone(), start_after: start_after.clone(), limit: page, revision })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if opts.continue_token.is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.",
                    ),
                    other => from_store(other, self.info, ""),
                })?;
            revision = result.revision;
            let mut last_key = None;
            for kv in &result.kvs {
                last_key = Some(kv.key.clone());
                let obj = decode_stored(kv)?;
                if opts.labels.matches_object(&obj) && opts.fields.matches(&self.info.kind, &obj) {
                    items.push(obj);
                    if opts.limit != 0 && items.len() == opts.limit {
                        let more = result.more
                            || last_key.as_deref() != result.kvs.last().map(|k| k.key.as_str());
                        let token = more.then(|| {
                            encode_continue(revision, last_key.as_deref().unwrap_or_default())
                        });
                        return Ok(ListResult {
                            items,
                            revision,
                            continue_token: token,
                        });
                    }
                }
            }
            if !result.more {
                return Ok(ListResult {
                    items,
                    revision,
                    continue_token: None,
                });
            }
            start_after = last_key;
        }
    }
}

/// `metadata.resourceVersion` of a stored object as a revision.
pub(crate) fn current_revision(obj: &Value) -> Revision {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Now, for handlers that stamp times.
pub(crate) fn now() -> String {
    now_rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "/registry/core/pods/default/web");
        let d = decode_continue(&t).unwrap();
        assert_eq!(
            (d.rv, d.start.as_str()),
            (42, "/registry/core/pods/default/web")
        );
        assert!(decode_continue("garbage!").is_err());
    }
}
