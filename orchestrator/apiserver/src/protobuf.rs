//! Decoding the protobuf bodies kubectl's `create <generator>` commands send (`kubectl create
//! secret generic|tls|docker-registry`, `configmap`, `namespace`, `serviceaccount`, `deployment`,
//! `job`, `cronjob`, `service`, `role`, `clusterrole`, `rolebinding`, `clusterrolebinding`), the
//! HorizontalPodAutoscaler of `kubectl autoscale`, and the CertificateSigningRequest `kubectl
//! certificate approve|deny` sends back.
//!
//! The body is `k8s\0` + `runtime.Unknown{typeMeta, raw}`, and `raw` is the object in
//! protobuf. The schema below lists, per message, the field numbers of upstream's generated
//! .proto files for the fields those generators can set, and how each maps to JSON. A field or
//! kind outside the schema makes the request fail with 415 (kubectl prints it; `-f` with YAML
//! works), so nothing is ever silently dropped.

use base64::Engine;
use serde_json::{Map, Value, json};

/// How one field maps to JSON.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static [F]),
    /// An embedded Go struct (`json:",inline"`): its fields merge into the parent.
    Inline(&'static [F]),
    MapStr,
    MapBytes,
    MapQuantity,
    /// A `resource.Quantity` message (its field 1 is the string form).
    Quantity,
    IntOrString,
    Time,
    /// `[]byte`: base64 in JSON.
    Bytes,
    /// `FieldsV1`: a message whose field 1 holds raw JSON.
    RawJson,
}

/// A field: number, JSON name, type, repeated, and whether the Go field is a pointer (so a zero
/// value was set on purpose and is kept; other zero values are how gogo-protobuf encodes
/// "unset" and are omitted).
#[derive(Clone, Copy)]
struct F(u64, &'static str, Ty, bool, bool);

use Ty::*;

const ONE: bool = false;
const MANY: bool = true;
const VAL: bool = false;
const PTR: bool = true;

const OWNER_REFERENCE: &[F] = &[
    F(1, "kind", Str, ONE, VAL),
    F(3, "name", Str, ONE, VAL),
    F(4, "uid", Str, ONE, VAL),
    F(5, "apiVersion", Str, ONE, VAL),
    F(6, "controller", Bool, ONE, PTR),
    F(7, "blockOwnerDeletion", Bool, ONE, PTR),
];
const OBJECT_META: &[F] = &[
    F(1, "name", Str, ONE, VAL),
    F(2, "generateName", Str, ONE, VAL),
    F(3, "namespace", Str, ONE, VAL),
    F(5, "uid", Str, ONE, VAL),
    F(6, "resourceVersion", Str, ONE, VAL),
    F(7, "generation", Int, ONE, VAL),
    F(8, "creationTimestamp", Time, ONE, VAL),
    F(11, "labels", MapStr, ONE, VAL),
    F(12, "annotations", MapStr, ONE, VAL),
    F(13, "ownerReferences", Msg(OWNER_REFERENCE), MANY, VAL),
    F(14, "finalizers", Str, MANY, VAL),
    F(17, "managedFields", Msg(MANAGED_FIELDS_ENTRY), MANY, VAL),
];
const MANAGED_FIELDS_ENTRY: &[F] = &[
    F(1, "manager", Str, ONE, VAL),
    F(2, "operation", Str, ONE, VAL),
    F(3, "apiVersion", Str, ONE, VAL),
    F(4, "time", Time, ONE, VAL),
    F(6, "fieldsType", Str, ONE, VAL),
    F(7, "fieldsV1", RawJson, ONE, VAL),
    F(8, "subresource", Str, ONE, VAL),
];
const CSR_CONDITION: &[F] = &[
    F(1, "type", Str, ONE, VAL),
    F(6, "status", Str, ONE, VAL),
    F(2, "reason", Str, ONE, VAL),
    F(3, "message", Str, ONE, VAL),
    F(4, "lastUpdateTime", Time, ONE, VAL),
    F(5, "lastTransitionTime", Time, ONE, VAL),
];
const CSR: &[F] = &[
    META,
    F(
        2,
        "spec",
        Msg(&[
            F(1, "request", Bytes, ONE, VAL),
            F(7, "signerName", Str, ONE, VAL),
            F(8, "expirationSeconds", Int, ONE, PTR),
            F(5, "usages", Str, MANY, VAL),
            F(2, "username", Str, ONE, VAL),
            F(3, "uid", Str, ONE, VAL),
            F(4, "groups", Str, MANY, VAL),
        ]),
        ONE,
        VAL,
    ),
    F(
        3,
        "status",
        Msg(&[
            F(1, "conditions", Msg(CSR_CONDITION), MANY, VAL),
            F(2, "certificate", Bytes, ONE, VAL),
        ]),
        ONE,
        VAL,
    ),
];
const LABEL_SELECTOR_REQUIREMENT: &[F] = &[
    F(1, "key", Str, ONE, VAL),
    F(2, "operator", Str, ONE, VAL),
    F(3, "values", Str, MANY, VAL),
];
const LABEL_SELECTOR: &[F] = &[
    F(1, "matchLabels", MapStr, ONE, VAL),
    F(
        2,
        "matchExpressions",
        Msg(LABEL_SELECTOR_REQUIREMENT),
        MANY,
        VAL,
    ),
];
const LOCAL_OBJECT_REFERENCE: &[F] = &[F(1, "name", Str, ONE, VAL)];
const OBJECT_REFERENCE: &[F] = &[
    F(1, "kind", Str, ONE, VAL),
    F(2, "namespace", Str, ONE, VAL),
    F(3, "name", Str, ONE, VAL),
    F(4, "uid", Str, ONE, VAL),
    F(5, "apiVersion", Str, ONE, VAL),
];
const CONTAINER_PORT: &[F] = &[
    F(1, "name", Str, ONE, VAL),
    F(2, "hostPort", Int, ONE, VAL),
    F(3, "containerPort", Int, ONE, VAL),
    F(4, "protocol", Str, ONE, VAL),
    F(5, "hostIP", Str, ONE, VAL),
];
const KEY_SELECTOR: &[F] = &[
    F(1, "", Inline(LOCAL_OBJECT_REFERENCE), ONE, VAL),
    F(2, "key", Str, ONE, VAL),
    F(3, "optional", Bool, ONE, PTR),
];
const FIELD_SELECTOR: &[F] = &[
    F(1, "apiVersion", Str, ONE, VAL),
    F(2, "fieldPath", Str, ONE, VAL),
];
const ENV_VAR_SOURCE: &[F] = &[
    F(1, "fieldRef", Msg(FIELD_SELECTOR), ONE, PTR),
    F(3, "configMapKeyRef", Msg(KEY_SELECTOR), ONE, PTR),
    F(4, "secretKeyRef", Msg(KEY_SELECTOR), ONE, PTR),
];
const ENV_VAR: &[F] = &[
    F(1, "name", Str, ONE, VAL),
    F(2, "value", Str, ONE, VAL),
    F(3, "valueFrom", Msg(ENV_VAR_SOURCE), ONE, PTR),
];
const RESOURCES: &[F] = &[
    F(1, "limits", MapQuantity, ONE, VAL),
    F(2, "requests", MapQuantity, ONE, VAL),
];
const CONTAINER: &[F] = &[
    F(1, "name", Str, ONE, VAL),
    F(2, "image", Str, ONE, VAL),
    F(3, "command", Str, MANY, VAL),
    F(4, "args", Str, MANY, VAL),
    F(5, "workingDir", Str, ONE, VAL),
    F(6, "ports", Msg(CONTAINER_PORT), MANY, VAL),
    F(7, "env", Msg(ENV_VAR), MANY, VAL),
    F(8, "resources", Msg(RESOURCES), ONE, VAL),
    F(13, "terminationMessagePath", Str, ONE, VAL),
    F(14, "imagePullPolicy", Str, ONE, VAL),
    F(16, "stdin", Bool, ONE, VAL),
    F(17, "stdinOnce", Bool, ONE, VAL),
    F(18, "tty", Bool, ONE, VAL),
    F(20, "terminationMessagePolicy", Str, ONE, VAL),
];
const POD_SPEC: &[F] = &[
    F(2, "containers", Msg(CONTAINER), MANY, VAL),
    F(3, "restartPolicy", Str, ONE, VAL),
    F(4, "terminationGracePeriodSeconds", Int, ONE, PTR),
    F(6, "dnsPolicy", Str, ONE, VAL),
    F(7, "nodeSelector", MapStr, ONE, VAL),
    F(8, "serviceAccountName", Str, ONE, VAL),
    F(
        15,
        "imagePullSecrets",
        Msg(LOCAL_OBJECT_REFERENCE),
        MANY,
        VAL,
    ),
    F(19, "schedulerName", Str, ONE, VAL),
    F(20, "initContainers", Msg(CONTAINER), MANY, VAL),
];
const POD_TEMPLATE: &[F] = &[
    F(1, "metadata", Msg(OBJECT_META), ONE, VAL),
    F(2, "spec", Msg(POD_SPEC), ONE, VAL),
];
const ROLLING_UPDATE: &[F] = &[
    F(1, "maxUnavailable", IntOrString, ONE, PTR),
    F(2, "maxSurge", IntOrString, ONE, PTR),
];
const DEPLOYMENT_STRATEGY: &[F] = &[
    F(1, "type", Str, ONE, VAL),
    F(2, "rollingUpdate", Msg(ROLLING_UPDATE), ONE, PTR),
];
const DEPLOYMENT_SPEC: &[F] = &[
    F(1, "replicas", Int, ONE, PTR),
    F(2, "selector", Msg(LABEL_SELECTOR), ONE, PTR),
    F(3, "template", Msg(POD_TEMPLATE), ONE, VAL),
    F(4, "strategy", Msg(DEPLOYMENT_STRATEGY), ONE, VAL),
    F(5, "minReadySeconds", Int, ONE, VAL),
    F(6, "revisionHistoryLimit", Int, ONE, PTR),
    F(7, "paused", Bool, ONE, VAL),
    F(9, "progressDeadlineSeconds", Int, ONE, PTR),
];
const JOB_SPEC: &[F] = &[
    F(1, "parallelism", Int, ONE, PTR),
    F(2, "completions", Int, ONE, PTR),
    F(3, "activeDeadlineSeconds", Int, ONE, PTR),
    F(4, "selector", Msg(LABEL_SELECTOR), ONE, PTR),
    F(5, "manualSelector", Bool, ONE, PTR),
    F(6, "template", Msg(POD_TEMPLATE), ONE, VAL),
    F(7, "backoffLimit", Int, ONE, PTR),
    F(8, "ttlSecondsAfterFinished", Int, ONE, PTR),
    F(9, "completionMode", Str, ONE, PTR),
    F(10, "suspend", Bool, ONE, PTR),
    F(12, "backoffLimitPerIndex", Int, ONE, PTR),
    F(13, "maxFailedIndexes", Int, ONE, PTR),
    // `kubectl create job --from=cronjob/…` sets it (the server's default, TerminatingOrFailed).
    F(14, "podReplacementPolicy", Str, ONE, PTR),
    F(15, "managedBy", Str, ONE, PTR),
];
const JOB_TEMPLATE: &[F] = &[
    F(1, "metadata", Msg(OBJECT_META), ONE, VAL),
    F(2, "spec", Msg(JOB_SPEC), ONE, VAL),
];
const CRONJOB_SPEC: &[F] = &[
    F(1, "schedule", Str, ONE, VAL),
    F(2, "startingDeadlineSeconds", Int, ONE, PTR),
    F(3, "concurrencyPolicy", Str, ONE, VAL),
    F(4, "suspend", Bool, ONE, PTR),
    F(5, "jobTemplate", Msg(JOB_TEMPLATE), ONE, VAL),
    F(6, "successfulJobsHistoryLimit", Int, ONE, PTR),
    F(7, "failedJobsHistoryLimit", Int, ONE, PTR),
    F(8, "timeZone", Str, ONE, PTR),
];
const SERVICE_PORT: &[F] = &[
    F(1, "name", Str, ONE, VAL),
    F(2, "protocol", Str, ONE, VAL),
    F(3, "port", Int, ONE, VAL),
    F(4, "targetPort", IntOrString, ONE, VAL),
    F(5, "nodePort", Int, ONE, VAL),
];
const SERVICE_SPEC: &[F] = &[
    F(1, "ports", Msg(SERVICE_PORT), MANY, VAL),
    F(2, "selector", MapStr, ONE, PTR),
    F(3, "clusterIP", Str, ONE, VAL),
    F(4, "type", Str, ONE, VAL),
    F(10, "externalName", Str, ONE, VAL),
];
const POLICY_RULE: &[F] = &[
    F(1, "verbs", Str, MANY, VAL),
    F(2, "apiGroups", Str, MANY, VAL),
    F(3, "resources", Str, MANY, VAL),
    F(4, "resourceNames", Str, MANY, VAL),
    F(5, "nonResourceURLs", Str, MANY, VAL),
];
const AGGREGATION_RULE: &[F] = &[F(1, "clusterRoleSelectors", Msg(LABEL_SELECTOR), MANY, VAL)];
const SUBJECT: &[F] = &[
    F(1, "kind", Str, ONE, VAL),
    F(2, "apiGroup", Str, ONE, VAL),
    F(3, "name", Str, ONE, VAL),
    F(4, "namespace", Str, ONE, VAL),
];
const ROLE_REF: &[F] = &[
    F(1, "apiGroup", Str, ONE, VAL),
    F(2, "kind", Str, ONE, VAL),
    F(3, "name", Str, ONE, VAL),
];
const META: F = F(1, "metadata", Msg(OBJECT_META), ONE, VAL);
const SELECTOR_ATTRIBUTES: &[F] = &[
    F(1, "rawSelector", Str, ONE, VAL),
    F(
        2,
        "requirements",
        Msg(LABEL_SELECTOR_REQUIREMENT),
        MANY,
        VAL,
    ),
];
const RESOURCE_ATTRIBUTES: &[F] = &[
    F(1, "namespace", Str, ONE, VAL),
    F(2, "verb", Str, ONE, VAL),
    F(3, "group", Str, ONE, VAL),
    F(4, "version", Str, ONE, VAL),
    F(5, "resource", Str, ONE, VAL),
    F(6, "subresource", Str, ONE, VAL),
    F(7, "name", Str, ONE, VAL),
    F(8, "fieldSelector", Msg(SELECTOR_ATTRIBUTES), ONE, VAL),
    F(9, "labelSelector", Msg(SELECTOR_ATTRIBUTES), ONE, VAL),
];
const NON_RESOURCE_ATTRIBUTES: &[F] = &[F(1, "path", Str, ONE, VAL), F(2, "verb", Str, ONE, VAL)];

const CROSS_VERSION_REF: &[F] = &[
    F(1, "kind", Str, ONE, VAL),
    F(2, "name", Str, ONE, VAL),
    F(3, "apiVersion", Str, ONE, VAL),
];
/// `kubectl autoscale` (autoscaling/v1).
const HPA_V1_SPEC: &[F] = &[
    F(1, "scaleTargetRef", Msg(CROSS_VERSION_REF), ONE, VAL),
    F(2, "minReplicas", Int, ONE, PTR),
    F(3, "maxReplicas", Int, ONE, VAL),
    F(4, "targetCPUUtilizationPercentage", Int, ONE, PTR),
];
const METRIC_TARGET: &[F] = &[
    F(1, "type", Str, ONE, VAL),
    F(2, "value", Quantity, ONE, PTR),
    F(3, "averageValue", Quantity, ONE, PTR),
    F(4, "averageUtilization", Int, ONE, PTR),
];
const METRIC_IDENTIFIER: &[F] = &[
    F(1, "name", Str, ONE, VAL),
    F(2, "selector", Msg(LABEL_SELECTOR), ONE, PTR),
];
const METRIC_SPEC: &[F] = &[
    F(1, "type", Str, ONE, VAL),
    F(
        2,
        "object",
        Msg(&[
            F(1, "describedObject", Msg(CROSS_VERSION_REF), ONE, VAL),
            F(2, "target", Msg(METRIC_TARGET), ONE, VAL),
            F(3, "metric", Msg(METRIC_IDENTIFIER), ONE, VAL),
        ]),
        ONE,
        PTR,
    ),
    F(
        3,
        "pods",
        Msg(&[
            F(1, "metric", Msg(METRIC_IDENTIFIER), ONE, VAL),
            F(2, "target", Msg(METRIC_TARGET), ONE, VAL),
        ]),
        ONE,
        PTR,
    ),
    F(
        4,
        "resource",
        Msg(&[
            F(1, "name", Str, ONE, VAL),
            F(2, "target", Msg(METRIC_TARGET), ONE, VAL),
        ]),
        ONE,
        PTR,
    ),
    F(
        5,
        "external",
        Msg(&[
            F(1, "metric", Msg(METRIC_IDENTIFIER), ONE, VAL),
            F(2, "target", Msg(METRIC_TARGET), ONE, VAL),
        ]),
        ONE,
        PTR,
    ),
    F(
        7,
        "containerResource",
        Msg(&[
            F(1, "name", Str, ONE, VAL),
            F(2, "target", Msg(METRIC_TARGET), ONE, VAL),
            F(3, "container", Str, ONE, VAL),
        ]),
        ONE,
        PTR,
    ),
];
const SCALING_RULES: &[F] = &[
    F(1, "selectPolicy", Str, ONE, PTR),
    F(
        2,
        "policies",
        Msg(&[
            F(1, "type", Str, ONE, VAL),
            F(2, "value", Int, ONE, VAL),
            F(3, "periodSeconds", Int, ONE, VAL),
        ]),
        MANY,
        VAL,
    ),
    F(3, "stabilizationWindowSeconds", Int, ONE, PTR),
];
/// autoscaling/v2.
const HPA_V2_SPEC: &[F] = &[
    F(1, "scaleTargetRef", Msg(CROSS_VERSION_REF), ONE, VAL),
    F(2, "minReplicas", Int, ONE, PTR),
    F(3, "maxReplicas", Int, ONE, VAL),
    F(4, "metrics", Msg(METRIC_SPEC), MANY, VAL),
    F(
        5,
        "behavior",
        Msg(&[
            F(1, "scaleUp", Msg(SCALING_RULES), ONE, PTR),
            F(2, "scaleDown", Msg(SCALING_RULES), ONE, PTR),
        ]),
        ONE,
        PTR,
    ),
];

/// The top-level message of each kind we decode.
fn schema_of(api_version: &str, kind: &str) -> Option<&'static [F]> {
    const HPA_V1: &[F] = &[META, F(2, "spec", Msg(HPA_V1_SPEC), ONE, VAL)];
    const HPA_V2: &[F] = &[META, F(2, "spec", Msg(HPA_V2_SPEC), ONE, VAL)];
    const CONFIG_MAP: &[F] = &[
        META,
        F(2, "data", MapStr, ONE, VAL),
        F(3, "binaryData", MapBytes, ONE, VAL),
        F(4, "immutable", Bool, ONE, PTR),
    ];
    const SECRET: &[F] = &[
        META,
        F(2, "data", MapBytes, ONE, VAL),
        F(3, "type", Str, ONE, VAL),
        F(4, "stringData", MapStr, ONE, VAL),
        F(5, "immutable", Bool, ONE, PTR),
    ];
    const NAMESPACE: &[F] = &[
        META,
        F(
            2,
            "spec",
            Msg(&[F(1, "finalizers", Str, MANY, VAL)]),
            ONE,
            VAL,
        ),
    ];
    const SERVICE_ACCOUNT: &[F] = &[
        META,
        F(2, "secrets", Msg(OBJECT_REFERENCE), MANY, VAL),
        F(
            3,
            "imagePullSecrets",
            Msg(LOCAL_OBJECT_REFERENCE),
            MANY,
            VAL,
        ),
        F(4, "automountServiceAccountToken", Bool, ONE, PTR),
    ];
    const DEPLOYMENT: &[F] = &[META, F(2, "spec", Msg(DEPLOYMENT_SPEC), ONE, VAL)];
    const JOB: &[F] = &[META, F(2, "spec", Msg(JOB_SPEC), ONE, VAL)];
    const CRONJOB: &[F] = &[META, F(2, "spec", Msg(CRONJOB_SPEC), ONE, VAL)];
    const SERVICE: &[F] = &[META, F(2, "spec", Msg(SERVICE_SPEC), ONE, VAL)];
    const ROLE: &[F] = &[
        META,
        F(2, "rules", Msg(POLICY_RULE), MANY, VAL),
        F(3, "aggregationRule", Msg(AGGREGATION_RULE), ONE, PTR),
    ];
    const BINDING: &[F] = &[
        META,
        F(2, "subjects", Msg(SUBJECT), MANY, VAL),
        F(3, "roleRef", Msg(ROLE_REF), ONE, VAL),
    ];
    const ACCESS_REVIEW: &[F] = &[
        META,
        F(
            2,
            "spec",
            Msg(&[
                F(1, "resourceAttributes", Msg(RESOURCE_ATTRIBUTES), ONE, VAL),
                F(
                    2,
                    "nonResourceAttributes",
                    Msg(NON_RESOURCE_ATTRIBUTES),
                    ONE,
                    VAL,
                ),
            ]),
            ONE,
            VAL,
        ),
    ];
    const RULES_REVIEW: &[F] = &[
        META,
        F(
            2,
            "spec",
            Msg(&[F(1, "namespace", Str, ONE, VAL)]),
            ONE,
            VAL,
        ),
    ];
    const SELF_REVIEW: &[F] = &[META];
    Some(match kind {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Deployment" => DEPLOYMENT,
        "Job" => JOB,
        "CronJob" => CRONJOB,
        "Service" => SERVICE,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "SelfSubjectAccessReview" => ACCESS_REVIEW,
        "SelfSubjectRulesReview" => RULES_REVIEW,
        "SelfSubjectReview" => SELF_REVIEW,
        // `kubectl certificate approve|deny` PUTs the whole object to /approval.
        "CertificateSigningRequest" => CSR,
        // `kubectl autoscale`.
        "HorizontalPodAutoscaler" if api_version == "autoscaling/v1" => HPA_V1,
        "HorizontalPodAutoscaler" if api_version == "autoscaling/v2" => HPA_V2,
        _ => return None,
    })
}

/// Why a protobuf body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtobufError {
    /// Not a protobuf envelope or truncated.
    #[error("the protobuf body is malformed")]
    Malformed,
    /// A kind or field outside what Skiff decodes.
    #[error(
        "protobuf bodies are supported for a few kinds and fields only; {0} is not among them — send JSON or YAML (for example kubectl create -f)"
    )]
    Unsupported(String),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.data.get(self.pos).ok_or(ProtobufError::Malformed)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed)
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtobufError> {
        if self.pos >= self.data.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| ProtobufError::Malformed)?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.data.len())
                    .ok_or(ProtobufError::Malformed)?;
                let bytes = &self.data[self.pos..end];
                self.pos = end;
                Wire::Bytes(bytes)
            }
            _ => return Err(ProtobufError::Unsupported(format!("wire type {}", key & 7))),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn fields(data: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ProtobufError> {
    let mut r = Reader { data, pos: 0 };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtobufError::Malformed)
}

fn map_entry(b: &[u8]) -> Result<(String, &[u8]), ProtobufError> {
    let mut key = String::new();
    let mut value: &[u8] = &[];
    for (n, w) in fields(b)? {
        match (n, w) {
            (1, Wire::Bytes(k)) => key = text(k)?,
            (2, Wire::Bytes(v)) => value = v,
            _ => return Err(ProtobufError::Malformed),
        }
    }
    Ok((key, value))
}

fn quantity(b: &[u8]) -> Result<Value, ProtobufError> {
    for (n, w) in fields(b)? {
        if let (1, Wire::Bytes(s)) = (n, w) {
            return Ok(json!(text(s)?));
        }
    }
    Ok(json!("0"))
}

fn value_of(ty: Ty, wire: Wire<'_>, path: &str) -> Result<Value, ProtobufError> {
    let wrong = || ProtobufError::Unsupported(format!("field {path} with this encoding"));
    Ok(match (ty, wire) {
        (Str, Wire::Bytes(b)) => json!(text(b)?),
        (Int, Wire::Varint(v)) => json!(v as i64),
        (Bool, Wire::Varint(v)) => json!(v != 0),
        (Msg(schema), Wire::Bytes(b)) => decode_message(b, schema, path)?,
        (Bytes, Wire::Bytes(b)) => json!(base64::engine::general_purpose::STANDARD.encode(b)),
        (Quantity, Wire::Bytes(b)) => quantity(b)?,
        (RawJson, Wire::Bytes(b)) => {
            let mut raw: &[u8] = &[];
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Bytes(r)) => raw = r,
                    _ => return Err(wrong()),
                }
            }
            serde_json::from_slice(raw).map_err(|_| ProtobufError::Malformed)?
        }
        (IntOrString, Wire::Bytes(b)) => {
            let (mut kind, mut int, mut string) = (0, 0i64, String::new());
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = v as i64,
                    (3, Wire::Bytes(s)) => string = text(s)?,
                    _ => return Err(ProtobufError::Malformed),
                }
            }
            if kind == 1 {
                json!(string)
            } else {
                json!(int as i32)
            }
        }
        (Time, Wire::Bytes(b)) => {
            let mut seconds = 0i64;
            for (n, w) in fields(b)? {
                if let (1, Wire::Varint(v)) = (n, w) {
                    seconds = v as i64;
                }
            }
            match jiff::Timestamp::from_second(seconds) {
                Ok(t) if seconds != 0 => json!(skiff_api::time::format_rfc3339(t)),
                _ => Value::Null,
            }
        }
        _ => return Err(wrong()),
    })
}

/// Whether a field holds only zero values (gogo-protobuf's encoding of "unset").
fn is_zero(wire: &Wire<'_>) -> bool {
    match wire {
        Wire::Varint(v) => *v == 0,
        Wire::Bytes(b) => {
            b.is_empty() || fields(b).is_ok_and(|fs| fs.iter().all(|(_, w)| is_zero(w)))
        }
    }
}

fn is_zero_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
    }
}

fn decode_message(data: &[u8], schema: &[F], path: &str) -> Result<Value, ProtobufError> {
    let mut out = Map::new();
    for (number, wire) in fields(data)? {
        let Some(&F(_, name, ty, repeated, pointer)) = schema.iter().find(|f| f.0 == number) else {
            if is_zero(&wire) {
                continue;
            }
            return Err(ProtobufError::Unsupported(format!(
                "field {number} of {}",
                if path.is_empty() { "the object" } else { path }
            )));
        };
        let child = if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        };
        match ty {
            Inline(inner) => {
                let Wire::Bytes(b) = wire else {
                    return Err(ProtobufError::Malformed);
                };
                if let Value::Object(m) = decode_message(b, inner, &child)? {
                    out.extend(m);
                }
            }
            MapStr | MapBytes | MapQuantity => {
                let Wire::Bytes(b) = wire else {
                    return Err(ProtobufError::Malformed);
                };
                let (k, v) = map_entry(b)?;
                let value = match ty {
                    MapStr => json!(text(v)?),
                    MapBytes => json!(base64::engine::general_purpose::STANDARD.encode(v)),
                    _ => quantity(v)?,
                };
                out.entry(name).or_insert_with(|| json!({}))[k] = value;
            }
            _ if repeated => {
                let v = value_of(ty, wire, &child)?;
                if let Some(list) = out.entry(name).or_insert_with(|| json!([])).as_array_mut() {
                    list.push(v);
                }
            }
            _ => {
                let v = value_of(ty, wire, &child)?;
                if pointer && !v.is_null() || !is_zero_json(&v) {
                    out.insert(name.to_owned(), v);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// The typeMeta (apiVersion, kind) and raw object of a `k8s\0` envelope.
pub(crate) fn envelope(body: &[u8]) -> Result<(String, String, &[u8]), ProtobufError> {
    let data = body
        .strip_prefix(b"k8s\0")
        .ok_or(ProtobufError::Malformed)?;
    let (mut api_version, mut kind, mut raw): (String, String, &[u8]) =
        (String::new(), String::new(), &[]);
    for (n, w) in fields(data)? {
        match (n, w) {
            (1, Wire::Bytes(type_meta)) => {
                for (tn, tw) in fields(type_meta)? {
                    match (tn, tw) {
                        (1, Wire::Bytes(v)) => api_version = text(v)?,
                        (2, Wire::Bytes(k)) => kind = text(k)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    Ok((api_version, kind, raw))
}

/// Decode a protobuf object body into the JSON object it encodes.
pub(crate) fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let (api_version, kind, raw) = envelope(body)?;
    let schema = schema_of(&api_version, &kind)
        .ok_or_else(|| ProtobufError::Unsupported(format!("kind {kind}")))?;
    let mut object = decode_message(raw, schema, "")?;
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint((n << 3) | 2, &mut out);
        varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    fn varint_field(n: u64, v: u8) -> Vec<u8> {
        vec![(n << 3) as u8, v]
    }

    fn envelope_of(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = field(1, api_version.as_bytes());
        type_meta.extend(field(2, kind.as_bytes()));
        let mut body = b"k8s\0".to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, raw));
        body
    }

    #[test]
    fn decodes_a_generic_secret() {
        let meta = [
            field(1, b"creds"),
            field(11, &[field(1, b"app"), field(2, b"db")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"password"), field(2, b"hunter2")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let obj = decode_object(&envelope_of("v1", "Secret", &raw)).unwrap();
        assert_eq!(obj["metadata"]["name"], "creds");
        assert_eq!(obj["metadata"]["labels"]["app"], "db");
        assert_eq!(obj["data"]["password"], "aHVudGVyMg==");
        assert_eq!(obj["type"], "Opaque");
        assert_eq!(obj["kind"], "Secret");
    }

    #[test]
    fn decodes_kubectl_autoscale_in_both_versions() {
        let target = [
            field(1, b"Deployment"),
            field(2, b"web"),
            field(3, b"apps/v1"),
        ]
        .concat();
        let v2_metric = [
            field(1, b"Resource"),
            field(
                4,
                &[
                    field(1, b"cpu"),
                    field(2, &[field(1, b"Utilization"), varint_field(4, 50)].concat()),
                ]
                .concat(),
            ),
        ]
        .concat();
        let spec = [
            field(1, &target),
            varint_field(2, 1),
            varint_field(3, 10),
            field(4, &v2_metric),
        ]
        .concat();
        let raw = [field(1, &field(1, b"web")), field(2, &spec)].concat();
        let obj = decode_object(&envelope_of(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            &raw,
        ))
        .unwrap();
        assert_eq!(obj["spec"]["scaleTargetRef"]["kind"], "Deployment");
        assert_eq!(obj["spec"]["minReplicas"], 1);
        assert_eq!(obj["spec"]["maxReplicas"], 10);
        let m = &obj["spec"]["metrics"][0];
        assert_eq!(m["type"], "Resource");
        assert_eq!(m["resource"]["name"], "cpu");
        assert_eq!(m["resource"]["target"]["averageUtilization"], 50);
        let v1_spec = [field(1, &target), varint_field(3, 4), varint_field(4, 80)].concat();
        let raw = [field(1, &field(1, b"web")), field(2, &v1_spec)].concat();
        let obj = decode_object(&envelope_of(
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            &raw,
        ))
        .unwrap();
        assert_eq!(obj["spec"]["targetCPUUtilizationPercentage"], 80);
        assert_eq!(obj["spec"]["maxReplicas"], 4);
    }

    #[test]
    fn decodes_a_deployment_with_containers() {
        let container = [
            field(1, b"web"),
            field(2, b"nginx"),
            field(6, &varint_field(3, 80)),
        ]
        .concat();
        let pod_spec = field(2, &container);
        let template = [
            field(
                1,
                &field(11, &[field(1, b"app"), field(2, b"web")].concat()),
            ),
            field(2, &pod_spec),
        ]
        .concat();
        let spec = [varint_field(1, 3), field(3, &template)].concat();
        let raw = [field(1, &field(1, b"web")), field(2, &spec)].concat();
        let obj = decode_object(&envelope_of("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(
            obj["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
            80
        );
        assert_eq!(obj["spec"]["template"]["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn decodes_a_certificate_signing_request_with_managed_fields() {
        let entry = [
            field(1, b"kubectl"),
            field(2, b"Apply"),
            field(7, &field(1, br#"{"f:spec":{}}"#)),
        ]
        .concat();
        let meta = [field(1, b"jane"), field(17, &entry)].concat();
        let condition = [
            field(1, b"Approved"),
            field(6, b"True"),
            field(2, b"KubectlApprove"),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(
                2,
                &[
                    field(1, b"PEM"),
                    field(7, b"kubernetes.io/kube-apiserver-client"),
                    varint_field(8, 0),
                ]
                .concat(),
            ),
            field(3, &field(1, &condition)),
        ]
        .concat();
        let obj = decode_object(&envelope_of(
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            &raw,
        ))
        .unwrap();
        assert_eq!(obj["spec"]["request"], "UEVN");
        assert_eq!(
            obj["spec"]["expirationSeconds"], 0,
            "pointer fields keep zero values"
        );
        assert_eq!(obj["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            obj["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {}})
        );
    }

    #[test]
    fn decodes_kubectls_access_review() {
        let attrs = [field(1, b"default"), field(2, b"create"), field(5, b"pods")].concat();
        let raw = field(2, &field(1, &attrs));
        let obj = decode_object(&envelope_of(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &raw,
        ))
        .unwrap();
        assert_eq!(obj["spec"]["resourceAttributes"]["verb"], "create");
        assert_eq!(obj["spec"]["resourceAttributes"]["resource"], "pods");
    }

    #[test]
    fn unknown_kinds_and_fields_are_refused() {
        assert!(matches!(
            decode_object(&envelope_of("v1", "Pod", &[])),
            Err(ProtobufError::Unsupported(_))
        ));
        let raw = field(15, b"x");
        assert!(matches!(
            decode_object(&envelope_of("v1", "ConfigMap", &raw)),
            Err(ProtobufError::Unsupported(_))
        ));
        assert_eq!(decode_object(b"junk"), Err(ProtobufError::Malformed));
    }
}
