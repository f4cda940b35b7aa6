//! The resource registry: every kind the API server serves, with the facts discovery, routing,
//! storage and printing need (group/version/kind, plural, scope, short names, verbs,
//! subresources).
//!
//! Resources are plain data so CustomResourceDefinitions can later add entries at runtime.

use serde::Serialize;

/// Verbs of a fully writable resource, in the order upstream discovery lists them.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// A subresource such as `pods/status` or `deployments/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subresource {
    /// Name after the slash (`status`, `scale`, `log`, …).
    pub name: String,
    /// Group of the object the subresource accepts and returns.
    pub group: String,
    /// Version of that object.
    pub version: String,
    /// Kind of that object (`Scale`, `Eviction`, the parent kind for `status`).
    pub kind: String,
    /// Verbs allowed on the subresource.
    pub verbs: Vec<String>,
}

/// One resource in one group-version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: String,
    /// Version served under, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: String,
    /// Lowercase singular name, e.g. `deployment`.
    pub singular: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names accepted by kubectl (`deploy`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Verbs allowed on the main resource.
    pub verbs: Vec<String>,
    /// Subresources.
    pub subresources: Vec<Subresource>,
    /// The version objects are stored in; other versions are converted on the way in and out.
    pub storage_version: String,
    /// Whether `metadata.generation` tracks spec changes.
    pub tracks_generation: bool,
}

impl ResourceInfo {
    /// Review resources (`selfsubjectaccessreviews`, …) are computed per request, never stored.
    pub fn is_review(&self) -> bool {
        self.verbs == ["create"] && self.plural.ends_with("reviews")
    }
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-qualified resource, as upstream error messages name it: `pods`,
    /// `deployments.apps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The group-qualified kind, as upstream Invalid messages name it: `Pod`, `Deployment.apps`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Key prefix of this resource's objects in the store; all versions of a resource share it.
    pub fn storage_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Store key of one object.
    pub fn storage_key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/{name}", self.storage_prefix()),
            _ => format!("{}{name}", self.storage_prefix()),
        }
    }

    /// Store key prefix of a namespace's objects (or every object when `namespace` is `None`).
    pub fn storage_prefix_in(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.storage_prefix()),
            _ => self.storage_prefix(),
        }
    }

    /// The subresource with this name, if served.
    pub fn subresource(&self, name: &str) -> Option<&Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether the main resource allows a verb.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// All served resources.
#[derive(Debug, Clone)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

struct Def {
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    all: bool,
    subs: &'static [&'static str],
    generation: bool,
    create_only: bool,
}

const fn def(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
) -> Def {
    Def {
        group,
        versions,
        kind,
        plural,
        namespaced,
        short: &[],
        all: false,
        subs: &[],
        generation: false,
        create_only: false,
    }
}

impl Def {
    const fn short(mut self, short: &'static [&'static str]) -> Self {
        self.short = short;
        self
    }
    const fn all(mut self) -> Self {
        self.all = true;
        self
    }
    const fn subs(mut self, subs: &'static [&'static str]) -> Self {
        self.subs = subs;
        self
    }
    const fn generation(mut self) -> Self {
        self.generation = true;
        self
    }
    /// Review resources: answered, never stored.
    const fn create_only(mut self) -> Self {
        self.create_only = true;
        self
    }
}

const CORE: &str = "";
const APPS: &str = "apps";
const BATCH: &str = "batch";
const RBAC: &str = "rbac.authorization.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";

/// The built-in resources. The first version listed is the preferred and storage version.
const BUILTIN: &[Def] = &[
    def(CORE, &["v1"], "Namespace", "namespaces", false)
        .short(&["ns"])
        .subs(&["status", "finalize"]),
    def(CORE, &["v1"], "Pod", "pods", true)
        .short(&["po"])
        .all()
        .subs(&[
            "status",
            "log",
            "exec",
            "eviction",
            "binding",
            "ephemeralcontainers",
        ]),
    def(CORE, &["v1"], "Node", "nodes", false)
        .short(&["no"])
        .subs(&["status", "proxy"]),
    def(CORE, &["v1"], "Event", "events", true).short(&["ev"]),
    def(CORE, &["v1"], "ConfigMap", "configmaps", true).short(&["cm"]),
    def(CORE, &["v1"], "Secret", "secrets", true),
    def(CORE, &["v1"], "ServiceAccount", "serviceaccounts", true).short(&["sa"]),
    def(CORE, &["v1"], "Service", "services", true)
        .short(&["svc"])
        .all()
        .subs(&["status", "proxy"]),
    def(CORE, &["v1"], "Endpoints", "endpoints", true).short(&["ep"]),
    def(
        CORE,
        &["v1"],
        "PersistentVolume",
        "persistentvolumes",
        false,
    )
    .short(&["pv"])
    .subs(&["status"]),
    def(
        CORE,
        &["v1"],
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    )
    .short(&["pvc"])
    .subs(&["status"]),
    def("coordination.k8s.io", &["v1"], "Lease", "leases", true),
    def(
        "apiregistration.k8s.io",
        &["v1"],
        "APIService",
        "apiservices",
        false,
    )
    .subs(&["status"]),
    def(
        "certificates.k8s.io",
        &["v1"],
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
    )
    .short(&["csr"])
    .subs(&["status", "approval"]),
    def(APPS, &["v1"], "Deployment", "deployments", true)
        .short(&["deploy"])
        .all()
        .subs(&["status", "scale"])
        .generation(),
    def(APPS, &["v1"], "ReplicaSet", "replicasets", true)
        .short(&["rs"])
        .all()
        .subs(&["status", "scale"])
        .generation(),
    def(APPS, &["v1"], "StatefulSet", "statefulsets", true)
        .short(&["sts"])
        .all()
        .subs(&["status", "scale"])
        .generation(),
    def(APPS, &["v1"], "DaemonSet", "daemonsets", true)
        .short(&["ds"])
        .all()
        .subs(&["status"])
        .generation(),
    def(
        APPS,
        &["v1"],
        "ControllerRevision",
        "controllerrevisions",
        true,
    ),
    def(BATCH, &["v1"], "Job", "jobs", true)
        .all()
        .subs(&["status"])
        .generation(),
    def(BATCH, &["v1"], "CronJob", "cronjobs", true)
        .short(&["cj"])
        .all()
        .subs(&["status"])
        .generation(),
    def(
        "autoscaling",
        &["v2", "v1"],
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    )
    .short(&["hpa"])
    .all()
    .subs(&["status"])
    .generation(),
    def(RBAC, &["v1"], "Role", "roles", true),
    def(RBAC, &["v1"], "RoleBinding", "rolebindings", true),
    def(RBAC, &["v1"], "ClusterRole", "clusterroles", false),
    def(
        RBAC,
        &["v1"],
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    def(
        AUTHZ,
        &["v1"],
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    )
    .create_only(),
    def(
        AUTHZ,
        &["v1"],
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        false,
    )
    .create_only(),
    def(
        AUTHN,
        &["v1"],
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
    )
    .create_only(),
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn subresource(group: &str, version: &str, parent_kind: &str, name: &str) -> Subresource {
    let (g, v, kind, verbs): (&str, &str, &str, &[&str]) = match name {
        "status" => (group, version, parent_kind, &["get", "patch", "update"]),
        "scale" => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "binding" => ("", "v1", "Binding", &["create"]),
        "ephemeralcontainers" => ("", "v1", "Pod", &["get", "patch", "update"]),
        "proxy" => (
            "",
            "v1",
            if parent_kind == "Service" {
                "ServiceProxyOptions"
            } else {
                "NodeProxyOptions"
            },
            &["create", "delete", "get", "patch", "update"],
        ),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        "approval" => (group, version, parent_kind, &["get", "patch", "update"]),
        other => panic!("unknown subresource {other}"),
    };
    Subresource {
        name: name.to_owned(),
        group: g.to_owned(),
        version: v.to_owned(),
        kind: kind.to_owned(),
        verbs: strings(verbs),
    }
}

impl Registry {
    /// The registry of built-in Kubernetes resources Skiff serves.
    pub fn builtin() -> Self {
        let mut resources = Vec::new();
        for d in BUILTIN {
            for version in d.versions {
                resources.push(ResourceInfo {
                    group: d.group.to_owned(),
                    version: (*version).to_owned(),
                    kind: d.kind.to_owned(),
                    plural: d.plural.to_owned(),
                    singular: d.kind.to_lowercase(),
                    namespaced: d.namespaced,
                    short_names: strings(d.short),
                    categories: if d.all { strings(&["all"]) } else { Vec::new() },
                    verbs: if d.create_only {
                        strings(&["create"])
                    } else {
                        strings(ALL_VERBS)
                    },
                    subresources: d
                        .subs
                        .iter()
                        .map(|s| subresource(d.group, version, d.kind, s))
                        .collect(),
                    storage_version: d.versions[0].to_owned(),
                    tracks_generation: d.generation,
                });
            }
        }
        Registry { resources }
    }

    /// Every resource in every version.
    pub fn resources(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Look up a resource by group, version and plural.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Look up a resource by group, version and kind.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Look up a resource by `apiVersion` (`apps/v1` or `v1`) and kind.
    pub fn by_api_version_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        let (group, version) = split_api_version(api_version);
        self.by_kind(group, version, kind)
    }

    /// The storage version of a resource (the version its objects are stored in).
    pub fn storage_info(&self, info: &ResourceInfo) -> &ResourceInfo {
        self.get(&info.group, &info.storage_version, &info.plural)
            .expect("storage version registered")
    }

    /// Group-versions served, in discovery order: groups in registration order, versions in
    /// preference order.
    pub fn group_versions(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    /// Resources served in one group-version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }

    /// Resolve a name the way kubectl users type it (`po`, `pods`, `pod`, `deploy`,
    /// `deployments.apps`, `Deployment`) to the preferred version of a resource.
    pub fn resolve(&self, name: &str) -> Option<&ResourceInfo> {
        let lower = name.to_lowercase();
        let (name, group) = match lower.split_once('.') {
            Some((n, g)) => (n.to_owned(), Some(g.to_owned())),
            None => (lower, None),
        };
        self.resources.iter().find(|r| {
            r.version == r.storage_version
                && group.as_deref().is_none_or(|g| g == r.group)
                && (r.plural == name
                    || r.singular == name
                    || r.kind.to_lowercase() == name
                    || r.short_names.contains(&name))
        })
    }
}

/// Split `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_short_and_qualified_names() {
        let r = Registry::builtin();
        assert_eq!(r.resolve("po").unwrap().plural, "pods");
        assert_eq!(r.resolve("deploy").unwrap().group, "apps");
        assert_eq!(r.resolve("deployments.apps").unwrap().kind, "Deployment");
        assert_eq!(r.resolve("Deployment").unwrap().plural, "deployments");
        assert_eq!(r.resolve("hpa").unwrap().version, "v2");
        assert!(r.resolve("nothing").is_none());
    }

    #[test]
    fn hpa_is_served_in_two_versions_sharing_storage() {
        let r = Registry::builtin();
        let v1 = r
            .get("autoscaling", "v1", "horizontalpodautoscalers")
            .unwrap();
        let v2 = r
            .get("autoscaling", "v2", "horizontalpodautoscalers")
            .unwrap();
        assert_eq!(v1.storage_prefix(), v2.storage_prefix());
        assert_eq!(r.storage_info(v1).version, "v2");
    }

    #[test]
    fn storage_keys_are_prefix_ordered() {
        let r = Registry::builtin();
        let pods = r.get("", "v1", "pods").unwrap();
        assert_eq!(
            pods.storage_key(Some("default"), "web"),
            "/registry/core/pods/default/web"
        );
        assert!(
            pods.storage_key(Some("default"), "web")
                .starts_with(&pods.storage_prefix_in(Some("default")))
        );
        let nodes = r.get("", "v1", "nodes").unwrap();
        assert_eq!(nodes.storage_key(None, "n1"), "/registry/core/nodes/n1");
    }
}
