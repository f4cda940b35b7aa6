//! Bad input gets the right Status code and stores nothing.

use std::time::Duration;

use serde_json::{Value, json};
use skiff_e2e::{Cluster, HttpResponse, wait_for};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn status(r: &HttpResponse) -> (u16, String, String) {
    let body = r.json();
    assert_eq!(
        body["kind"],
        "Status",
        "not a Status: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    (
        r.status,
        body["reason"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[track_caller]
fn expect(r: HttpResponse, code: u16, reason: &str, message: &str) -> Value {
    let (c, re, msg) = status(&r);
    assert_eq!((c, re.as_str()), (code, reason), "message: {msg}");
    assert!(msg.contains(message), "{msg:?} should contain {message:?}");
    r.json()
}

fn count(cluster: &Cluster, path: &str) -> usize {
    cluster.http("GET", path, None, b"").unwrap().json()["items"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn bad_requests_get_statuses_and_store_nothing() {
    let cluster = Cluster::start().expect("skiffd starts");
    let post =
        |path: &str, ct: &str, body: &[u8]| cluster.http("POST", path, Some(ct), body).unwrap();
    let before = count(&cluster, CMS);

    expect(
        post(CMS, "application/json", b"{not json"),
        400,
        "BadRequest",
        "json parse error",
    );
    expect(
        post(CMS, "application/yaml", b"metadata: [unclosed"),
        400,
        "BadRequest",
        "yaml",
    );
    expect(
        post(CMS, "application/json", b"[1,2]"),
        400,
        "BadRequest",
        "expected an object",
    );
    expect(
        post(CMS, "application/json", &[0xff, 0xfe, 0x00, 0x01]),
        400,
        "BadRequest",
        "json parse error",
    );
    let invalid = expect(
        post(
            CMS,
            "application/json",
            br#"{"metadata":{"name":"Bad_Name"}}"#,
        ),
        422,
        "Invalid",
        r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#,
    );
    assert_eq!(invalid["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(
        invalid["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );
    expect(
        post(CMS, "application/json", br#"{"metadata":{}}"#),
        422,
        "Invalid",
        "metadata.name: Required value: name or generateName is required",
    );
    expect(
        post(
            CMS,
            "application/json",
            br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"}}"#,
        ),
        400,
        "BadRequest",
        "does not match the expected API version",
    );
    expect(
        post(
            CMS,
            "application/json",
            br#"{"kind":"Secret","metadata":{"name":"x"}}"#,
        ),
        400,
        "BadRequest",
        "the kind in the data (Secret) does not match the expected kind (ConfigMap)",
    );
    expect(
        post(
            CMS,
            "application/json",
            br#"{"metadata":{"name":"x"},"data":{"k":1}}"#,
        ),
        400,
        "BadRequest",
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap",
    );
    expect(
        post(
            &format!("{CMS}?fieldValidation=Strict"),
            "application/json",
            br#"{"metadata":{"name":"x"},"dta":{}}"#,
        ),
        400,
        "BadRequest",
        r#"strict decoding error: unknown field "dta""#,
    );
    expect(
        post(CMS, "application/vnd.kubernetes.protobuf", b"k8s\0junk"),
        400,
        "BadRequest",
        "the protobuf body is malformed",
    );
    // A well-formed envelope of a kind Skiff does not decode from protobuf: 415, not dropped data.
    let type_meta = [&[10u8, 2][..], b"v1", &[18, 3], b"Pod"].concat();
    let envelope = [
        &b"k8s\0"[..],
        &[10, type_meta.len() as u8],
        &type_meta,
        &[18, 0],
    ]
    .concat();
    expect(
        post(
            "/api/v1/namespaces/default/pods",
            "application/vnd.kubernetes.protobuf",
            &envelope,
        ),
        415,
        "UnsupportedMediaType",
        "kind Pod",
    );
    expect(
        post(
            CMS,
            "application/json",
            br#"{"metadata":{"name":"x","resourceVersion":"5"}}"#,
        ),
        400,
        "BadRequest",
        "resourceVersion should not be set",
    );
    let huge = format!(
        r#"{{"metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    expect(
        post(CMS, "application/json", huge.as_bytes()),
        413,
        "RequestEntityTooLarge",
        "limit is 3145728",
    );
    let data_too_big = format!(
        r#"{{"metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(1024 * 1024 + 10)
    );
    expect(
        post(CMS, "application/json", data_too_big.as_bytes()),
        422,
        "Invalid",
        "must have at most 1048576 bytes",
    );
    expect(
        post(
            "/api/v1/namespaces/nope/configmaps",
            "application/json",
            br#"{"metadata":{"name":"x"}}"#,
        ),
        404,
        "NotFound",
        r#"namespaces "nope" not found"#,
    );
    expect(post("/apis/apps/v1/namespaces/default/deployments", "application/json",
        br#"{"metadata":{"name":"web"},"spec":{"replicas":-1,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"api"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#),
        422, "Invalid", r#"Deployment.apps "web" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, spec.template.metadata.labels: Invalid value"#);
    assert_eq!(count(&cluster, CMS), before, "nothing was stored");
    assert_eq!(
        count(&cluster, "/apis/apps/v1/namespaces/default/deployments"),
        0
    );

    // Selectors.
    let get = |path: &str| cluster.http("GET", path, None, b"").unwrap();
    expect(
        get(&format!("{CMS}?labelSelector=app+in+web")),
        400,
        "BadRequest",
        "unable to parse requirement",
    );
    expect(
        get(&format!("{CMS}?labelSelector=-bad%3Dx")),
        400,
        "BadRequest",
        "invalid label key",
    );
    expect(
        get(&format!("{CMS}?fieldSelector=spec.foo%3Dbar")),
        400,
        "BadRequest",
        "field label not supported: spec.foo",
    );
    expect(
        get(&format!("{CMS}?limit=abc")),
        400,
        "BadRequest",
        "invalid value for limit",
    );
    expect(
        get(&format!("{CMS}?continue=garbage")),
        400,
        "BadRequest",
        "continue key is not valid",
    );
    expect(
        get("/api/v1/widgets"),
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    expect(
        get("/apis/apps/v1/namespaces/default/deployments/x/bogus"),
        404,
        "NotFound",
        "could not find the requested resource",
    );
    expect(
        cluster
            .http("PUT", CMS, Some("application/json"), b"{}")
            .unwrap(),
        405,
        "MethodNotAllowed",
        "PUT is not supported",
    );

    // Patches.
    assert_eq!(
        post(
            CMS,
            "application/json",
            br#"{"metadata":{"name":"p"},"data":{"a":"1"}}"#
        )
        .status,
        201
    );
    let patch = |ct: &str, body: &[u8]| {
        cluster
            .http("PATCH", &format!("{CMS}/p"), Some(ct), body)
            .unwrap()
    };
    expect(
        patch(
            "application/json-patch+json",
            br#"[{"op":"replace","path":"/nope/x","value":1}]"#,
        ),
        400,
        "BadRequest",
        "",
    );
    expect(
        patch("application/json-patch+json", b"{not a patch"),
        400,
        "BadRequest",
        "error decoding patch",
    );
    expect(
        patch("application/merge-patch+json", b"[1]"),
        400,
        "BadRequest",
        "merge patch must be a JSON object",
    );
    expect(
        patch(
            "application/strategic-merge-patch+json",
            br#"{"data":{"a":5}}"#,
        ),
        400,
        "BadRequest",
        "cannot be handled as a ConfigMap",
    );
    expect(
        patch("text/plain", b"{}"),
        415,
        "UnsupportedMediaType",
        "application/json-patch+json",
    );
    expect(
        patch(
            "application/merge-patch+json",
            br#"{"metadata":{"name":"other"}}"#,
        ),
        400,
        "BadRequest",
        "does not match the name on the URL",
    );
    expect(
        cluster
            .http(
                "PATCH",
                &format!("{CMS}/missing"),
                Some("application/merge-patch+json"),
                b"{}",
            )
            .unwrap(),
        404,
        "NotFound",
        r#"configmaps "missing" not found"#,
    );
    let current = get(&format!("{CMS}/p")).json();
    assert_eq!(current["data"]["a"], "1", "failed patches changed nothing");

    // Updates with stale or malformed resourceVersions.
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    expect(
        cluster
            .http(
                "PUT",
                &format!("{CMS}/p"),
                Some("application/json"),
                stale.to_string().as_bytes(),
            )
            .unwrap(),
        409,
        "Conflict",
        "the object has been modified",
    );
    stale["metadata"]["resourceVersion"] = json!("abc");
    expect(
        cluster
            .http(
                "PUT",
                &format!("{CMS}/p"),
                None,
                stale.to_string().as_bytes(),
            )
            .unwrap(),
        400,
        "BadRequest",
        "invalid resource version",
    );
    let mut renamed = current.clone();
    renamed["metadata"]["name"] = json!("q");
    expect(
        cluster
            .http(
                "PUT",
                &format!("{CMS}/p"),
                None,
                renamed.to_string().as_bytes(),
            )
            .unwrap(),
        400,
        "BadRequest",
        "does not match the name on the URL (p)",
    );
    // A PUT without Content-Type is JSON (kubectl scale --current-replicas sends none).
    let mut ok = current.clone();
    ok["data"]["a"] = json!("2");
    assert_eq!(
        cluster
            .http("PUT", &format!("{CMS}/p"), None, ok.to_string().as_bytes())
            .unwrap()
            .status,
        200
    );
    expect(
        cluster
            .http(
                "DELETE",
                &format!("{CMS}/p"),
                Some("application/json"),
                br#"{"propagationPolicy":"Sometimes"}"#,
            )
            .unwrap(),
        400,
        "BadRequest",
        "propagationPolicy",
    );
}

#[test]
fn compacted_history_is_gone() {
    let cluster = Cluster::start_with(&[
        "--store-maintenance-interval-secs",
        "1",
        "--store-min-retained-revisions",
        "1",
        "--store-retention-secs",
        "0",
    ])
    .expect("skiffd starts");
    for i in 0..5 {
        let body = format!(r#"{{"metadata":{{"name":"c{i}"}}}}"#);
        assert_eq!(
            cluster
                .http("POST", CMS, Some("application/json"), body.as_bytes())
                .unwrap()
                .status,
            201
        );
    }
    let page = cluster
        .http("GET", &format!("{CMS}?limit=2"), None, b"")
        .unwrap()
        .json();
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_owned();
    let first_rv: i64 = page["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // More writes, then wait for compaction past the page's revision.
    for i in 5..8 {
        let body = format!(r#"{{"metadata":{{"name":"c{i}"}}}}"#);
        cluster
            .http("POST", CMS, Some("application/json"), body.as_bytes())
            .unwrap();
    }
    let watch_path = format!("{CMS}?watch=true&resourceVersion=1&timeoutSeconds=5");
    let event = wait_for(
        Duration::from_secs(30),
        "compaction to pass revision 1",
        || {
            let r = cluster.http("GET", &watch_path, None, b"").ok()?;
            let line = String::from_utf8_lossy(&r.body).lines().next()?.to_owned();
            let event: Value = serde_json::from_str(&line).ok()?;
            (event["type"] == "ERROR").then_some(event)
        },
    )
    .unwrap();
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert!(
        event["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with("too old resource version: 1")
    );
    wait_for(
        Duration::from_secs(30),
        "the continue token to expire",
        || {
            let r = cluster
                .http("GET", &format!("{CMS}?limit=2&continue={token}"), None, b"")
                .ok()?;
            (r.status == 410).then_some(())
        },
    )
    .unwrap();
    assert!(first_rv > 0);
}

#[test]
fn unauthenticated_requests_get_401() {
    let cluster = Cluster::start().expect("skiffd starts");
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', insecure-skip-tls-verify: true}}\nusers:\n- name: nobody\n  user: {{token: wrong}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: nobody}}\ncurrent-context: c\n",
        cluster.url
    );
    let path = dir.path().join("anon");
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &path)
        .args(["get", "ns"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("You must be logged in to the server") || text.contains("Unauthorized"),
        "{text}"
    );
    // A static token authenticates.
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,alice,1000,\"dev\"\n").unwrap();
    drop(cluster);
    let with_tokens =
        Cluster::start_with(&["--token-auth-file", tokens.to_str().unwrap()]).unwrap();
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', insecure-skip-tls-verify: true}}\nusers:\n- name: alice\n  user: {{token: s3cret}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: alice}}\ncurrent-context: c\n",
        with_tokens.url
    );
    std::fs::write(&path, config).unwrap();
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", &path)
        .args(["auth", "whoami"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("alice"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
