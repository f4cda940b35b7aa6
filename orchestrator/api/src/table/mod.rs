//! Server-side printing: `meta.k8s.io/v1` Tables with the columns kubectl shows for each kind.
//! kubectl prints the cells verbatim, so everything (ages included) is rendered here.

mod cluster;
mod pods;
mod workloads;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::time::age;

/// One column of a Table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Header as upstream names it (kubectl upper-cases it).
    pub name: &'static str,
    /// `string`, `integer`, `date`…
    pub ty: &'static str,
    /// `name` for the name column, else empty.
    pub format: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: u8,
}

const fn col(name: &'static str, ty: &'static str, priority: u8) -> Column {
    Column {
        name,
        ty,
        format: "",
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
};
const AGE: Column = col("Age", "string", 0);

/// What rows carry besides their cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parse the query parameter value.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// The columns of `kind`.
pub fn columns(kind: &str) -> Vec<Column> {
    let s = |n| col(n, "string", 0);
    let w = |n| col(n, "string", 1);
    let i = |n| col(n, "integer", 0);
    match kind {
        "Pod" => vec![
            NAME,
            s("Ready"),
            s("Status"),
            s("Restarts"),
            AGE,
            w("IP"),
            w("Node"),
            w("Nominated Node"),
            w("Readiness Gates"),
        ],
        "Deployment" => vec![
            NAME,
            s("Ready"),
            i("Up-to-date"),
            i("Available"),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "ReplicaSet" => vec![
            NAME,
            i("Desired"),
            i("Current"),
            i("Ready"),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "DaemonSet" => vec![
            NAME,
            i("Desired"),
            i("Current"),
            i("Ready"),
            i("Up-to-date"),
            i("Available"),
            s("Node Selector"),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "StatefulSet" => vec![NAME, s("Ready"), AGE, w("Containers"), w("Images")],
        "Job" => vec![
            NAME,
            s("Status"),
            s("Completions"),
            s("Duration"),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "CronJob" => vec![
            NAME,
            s("Schedule"),
            s("Timezone"),
            s("Suspend"),
            i("Active"),
            s("Last Schedule"),
            AGE,
            w("Containers"),
            w("Images"),
            w("Selector"),
        ],
        "ControllerRevision" => vec![NAME, s("Controller"), i("Revision"), AGE],
        "HorizontalPodAutoscaler" => vec![
            NAME,
            s("Reference"),
            s("Targets"),
            s("MinPods"),
            i("MaxPods"),
            i("Replicas"),
            AGE,
        ],
        "Node" => vec![
            NAME,
            s("Status"),
            s("Roles"),
            AGE,
            s("Version"),
            w("Internal-IP"),
            w("External-IP"),
            w("OS-Image"),
            w("Kernel-Version"),
            w("Container-Runtime"),
        ],
        "Namespace" => vec![NAME, s("Status"), AGE],
        "Event" => vec![
            s("Last Seen"),
            s("Type"),
            s("Reason"),
            s("Object"),
            s("Message"),
            w("Subobject"),
            w("Source"),
            w("First Seen"),
            w("Count"),
            w("Name"),
        ],
        "ConfigMap" => vec![NAME, i("Data"), AGE],
        "Secret" => vec![NAME, s("Type"), i("Data"), AGE],
        "ServiceAccount" => vec![NAME, s("Secrets"), AGE],
        "Service" => vec![
            NAME,
            s("Type"),
            s("Cluster-IP"),
            s("External-IP"),
            s("Port(s)"),
            AGE,
            w("Selector"),
        ],
        "Endpoints" => vec![NAME, s("Endpoints"), AGE],
        "PersistentVolume" => vec![
            NAME,
            s("Capacity"),
            s("Access Modes"),
            s("Reclaim Policy"),
            s("Status"),
            s("Claim"),
            s("StorageClass"),
            s("VolumeAttributesClass"),
            s("Reason"),
            AGE,
            w("VolumeMode"),
        ],
        "PersistentVolumeClaim" => vec![
            NAME,
            s("Status"),
            s("Volume"),
            s("Capacity"),
            s("Access Modes"),
            s("StorageClass"),
            s("VolumeAttributesClass"),
            AGE,
            w("VolumeMode"),
        ],
        "Lease" => vec![NAME, s("Holder"), AGE],
        "APIService" => vec![NAME, s("Service"), s("Available"), AGE],
        "CertificateSigningRequest" => vec![
            NAME,
            AGE,
            s("SignerName"),
            s("Requestor"),
            s("RequestedDuration"),
            s("Condition"),
        ],
        "Role" | "ClusterRole" => vec![NAME, s("Created At")],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            NAME,
            s("Role"),
            AGE,
            w("Users"),
            w("Groups"),
            w("ServiceAccounts"),
        ],
        _ => vec![NAME, AGE],
    }
}

/// The cells of one object's row, in [`columns`] order.
pub fn cells(kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    let name = json!(str_at(obj, "/metadata/name"));
    let created = age(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now,
    );
    match kind {
        "Pod" => pods::pod_cells(obj, now),
        "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "Job"
        | "CronJob"
        | "ControllerRevision"
        | "HorizontalPodAutoscaler" => workloads::cells(kind, obj, name, json!(created), now),
        "Role" | "ClusterRole" => vec![name, json!(str_at(obj, "/metadata/creationTimestamp"))],
        _ => cluster::cells(kind, obj, name, json!(created), now)
            .unwrap_or_else(|| vec![json!(str_at(obj, "/metadata/name")), json!(created)]),
    }
}

/// Build a Table of `objects` (each a full object of `kind`).
pub fn build_table(
    kind: &str,
    objects: &[Value],
    include: IncludeObject,
    resource_version: &str,
    continue_token: Option<&str>,
) -> Value {
    let now = Timestamp::now();
    let column_definitions: Vec<Value> = columns(kind)
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.ty, "format": c.format,
                   "description": column_description(c.name), "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(kind, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({"kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({}))});
                }
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
           "columnDefinitions": column_definitions, "rows": rows})
}

fn column_description(name: &str) -> &'static str {
    match name {
        "Name" => {
            "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated."
        }
        "Age" => {
            "CreationTimestamp is a timestamp representing the server time when this object was created."
        }
        _ => "",
    }
}

/// String at a JSON pointer, empty when absent.
pub(crate) fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Integer at a JSON pointer, 0 when absent.
pub(crate) fn int_at(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// `<none>` for empty strings, as kubectl prints missing values.
pub(crate) fn or_none(s: impl Into<String>) -> String {
    let s = s.into();
    if s.is_empty() { "<none>".into() } else { s }
}

/// Container names and images of a pod template at `pointer` (joined with commas).
pub(crate) fn containers_and_images(obj: &Value, pointer: &str) -> (String, String) {
    let containers = obj.pointer(pointer).and_then(Value::as_array);
    let names: Vec<&str> = containers
        .into_iter()
        .flatten()
        .map(|c| str_at(c, "/name"))
        .collect();
    let images: Vec<&str> = containers
        .into_iter()
        .flatten()
        .map(|c| str_at(c, "/image"))
        .collect();
    (names.join(","), images.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_one_cell_per_column() {
        let obj = json!({"metadata": {"name": "x", "namespace": "d", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        for kind in [
            "Pod",
            "Deployment",
            "ReplicaSet",
            "DaemonSet",
            "StatefulSet",
            "Job",
            "CronJob",
            "ControllerRevision",
            "HorizontalPodAutoscaler",
            "Node",
            "Namespace",
            "Event",
            "ConfigMap",
            "Secret",
            "ServiceAccount",
            "Service",
            "Endpoints",
            "PersistentVolume",
            "PersistentVolumeClaim",
            "Lease",
            "APIService",
            "CertificateSigningRequest",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
            "Unknown",
        ] {
            assert_eq!(
                cells(kind, &obj, Timestamp::now()).len(),
                columns(kind).len(),
                "{kind}"
            );
        }
    }

    #[test]
    fn table_rows_carry_partial_metadata() {
        let obj = json!({"metadata": {"name": "cfg", "namespace": "default"}, "data": {"a": "1"}});
        let t = build_table("ConfigMap", &[obj], IncludeObject::Metadata, "7", None);
        assert_eq!(t["rows"][0]["cells"][0], "cfg");
        assert_eq!(t["rows"][0]["cells"][1], 1);
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
