//! Joining a node with a server URL and a bootstrap token: `skiffd token create`, the agent's
//! TLS bootstrap through CertificateSigningRequests, the approver and signer, what a bootstrap
//! token may and may not do, and manual approval with `kubectl certificate approve`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use skiff_e2e::{Agent, Cluster, Run, bin_dir, run, wait_for};

fn agent_fails(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin_dir().join("skiffd"));
    cmd.arg("agent")
        .args(args)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args([
            "--runtime",
            "process",
            "--agent-port",
            "0",
            "--node-name",
            "never-joins",
        ]);
    run(cmd, None)
}

fn skiffd(cluster: &Cluster, args: &[&str]) -> Run {
    let mut cmd = Command::new(bin_dir().join("skiffd"));
    cmd.args(args)
        .args(["--data-dir", cluster.dir.path().to_str().unwrap()]);
    run(cmd, None)
}

/// kubectl with only the given credentials (no admin kubeconfig).
fn kubectl_as(cluster: &Cluster, kubeconfig: &Path, args: &[&str]) -> Run {
    let _ = cluster;
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig).args(args);
    run(cmd, None)
}

/// An anonymous HTTPS GET (kubectl cannot make one: without credentials it prompts for a
/// password): the status code and body.
fn anonymous_get(cluster: &Cluster, path: &str) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}", "--cacert"])
        .arg(cluster.dir.path().join("pki/ca.crt"))
        .arg(format!("{}{path}", cluster.url))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_owned(), body.to_owned())
}

/// A kubeconfig for `cluster` holding only the server and CA; callers add credentials as flags.
fn bare_kubeconfig(cluster: &Cluster, dir: &Path) -> PathBuf {
    let path = dir.join("bare.kubeconfig");
    let ca = cluster.dir.path().join("pki/ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: '{}', certificate-authority: '{}'}}\n\
         users:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: nobody}}\ncurrent-context: c\n",
        cluster.url,
        ca.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// A PEM certificate request for user `cn` in `org`, and its key.
fn user_request(cn: &str, org: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    (pem, key.serialize_pem())
}

#[test]
fn nodes_join_with_a_bootstrap_token() {
    let cluster = Cluster::start_with(&["--no-agent"]).expect("skiffd starts");
    let k = |args: &[&str]| cluster.kubectl(args);
    let scratch = tempfile::tempdir().unwrap();
    let bare = bare_kubeconfig(&cluster, scratch.path());

    // The join command names this server, a fresh token and the CA's public-key hash.
    let out = skiffd(&cluster, &["token", "create", "--print-join-command"]);
    out.expect_ok(r"^skiffd agent --server https://\S+ --token [a-z0-9]{6}\.[a-z0-9]{16} --ca-cert-hash sha256:[0-9a-f]{64}\s*$");
    let words: Vec<String> = out.stdout.split_whitespace().map(str::to_owned).collect();
    let flag = |name: &str| {
        let i = words.iter().position(|w| w == name).unwrap();
        words[i + 1].clone()
    };
    let (token, hash) = (flag("--token"), flag("--ca-cert-hash"));
    let token_id = token.split('.').next().unwrap().to_owned();
    skiffd(&cluster, &["token", "list"]).expect_ok(&format!(
        r"(?m)^{token} +2[34]h +\S+ +authentication,signing +<none> +system:bootstrappers:skiff:default-node-token"
    ));
    k(&[
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{token_id}"),
        "-o",
        "jsonpath={.type} {.data.token-id}",
    ])
    .expect_ok(&format!(
        "^bootstrap.kubernetes.io/token {}$",
        base64::engine::general_purpose::STANDARD.encode(&token_id)
    ));

    // Anonymous callers read cluster-info and nothing else.
    let (code, body) = anonymous_get(
        &cluster,
        "/api/v1/namespaces/kube-public/configmaps/cluster-info",
    );
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("certificate-authority-data"), "{body}");
    // (Skiff answers other anonymous requests 401, as upstream does with --anonymous-auth=false.)
    let (code, body) = anonymous_get(&cluster, "/api/v1/namespaces/default/pods");
    assert_eq!(code, "401", "{body}");

    // A bootstrap token may ask for a certificate, not read the cluster.
    kubectl_as(&cluster, &bare, &["--token", &token, "get", "pods"]).expect_fail(
        1,
        &format!(r#"User "system:bootstrap:{token_id}" cannot list resource "pods" in API group "" in the namespace "default""#),
    );
    kubectl_as(&cluster, &bare, &["--token", &token, "get", "csr"]).expect_ok("");
    kubectl_as(
        &cluster,
        &bare,
        &["--token", "abcdef.0123456789abcdef", "get", "csr"],
    )
    .expect_fail(1, "Unauthorized|provide credentials");

    // Joining refuses a CA it cannot trust, unknown and expired tokens, and no trust at all.
    let server = flag("--server");
    agent_fails(&[
        "--server",
        &server,
        "--token",
        &token,
        "--ca-cert-hash",
        &format!("sha256:{}", "0".repeat(64)),
    ])
    .expect_fail(1, "matches none of the --ca-cert-hash values");
    agent_fails(&[
        "--server",
        &server,
        "--token",
        "abcdef.0123456789abcdef",
        "--ca-cert-hash",
        &hash,
    ])
    .expect_fail(1, r"401 Unauthorized\): check the bootstrap token");
    agent_fails(&["--server", &server, "--token", &token])
        .expect_fail(1, "needs a way to trust the cluster: pass --ca-cert-hash");
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(
                "apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-old000, namespace: kube-system}\n\
                 type: bootstrap.kubernetes.io/token\nstringData: {token-id: old000, token-secret: 0123456789abcdef, \
                 usage-bootstrap-authentication: 'true', expiration: '2020-01-01T00:00:00Z'}\n",
            ),
        )
        .expect_ok("created");
    agent_fails(&[
        "--server",
        &server,
        "--token",
        "old000.0123456789abcdef",
        "--ca-cert-hash",
        &hash,
    ])
    .expect_fail(1, "401 Unauthorized");

    // The real join: the node gets its client and serving certificates through CSRs.
    let node = format!("joined-{}", &token_id);
    let join: Vec<String> = [
        "--server",
        &server,
        "--token",
        &token,
        "--ca-cert-hash",
        &hash,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut agent = Agent::start(&join, &node);
    let ready = wait_for(Duration::from_secs(60), "joined node Ready", || {
        let out = k(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (out.stdout == "True").then_some(())
    });
    assert!(ready.is_ok(), "node never became Ready:\n{}", agent.log());
    let csrs = k(&["get", "csr"]);
    csrs.expect_ok(&format!(
        r"(?m)^node-csr-\S+ +\S+ +kubernetes.io/kube-apiserver-client-kubelet +system:bootstrap:{token_id} +<none> +Approved,Issued$"
    ));
    csrs.expect_ok(&format!(
        r"(?m)^node-serving-\S+ +\S+ +kubernetes.io/kubelet-serving +system:node:{node} +<none> +Approved,Issued$"
    ));
    assert!(
        std::fs::read_to_string(agent.dir.path().join("agent/kubeconfig"))
            .unwrap()
            .contains("client-certificate-data"),
        "the joined node keeps its credentials"
    );

    // Pods run on it, and the API server reaches it for logs (its serving certificate chains
    // to the cluster CA).
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: hello}}\nspec:\n  nodeName: {node}\n  restartPolicy: Never\n  \
                 containers:\n  - {{name: app, image: skiff-testapp:e2e, args: [log, --count, '3', --text, joined]}}\n"
            )),
        )
        .expect_ok("created");
    let done = wait_for(
        Duration::from_secs(60),
        "pod on the joined node succeeds",
        || {
            (k(&["get", "pod", "hello", "-o", "jsonpath={.status.phase}"]).stdout == "Succeeded")
                .then_some(())
        },
    );
    assert!(
        done.is_ok(),
        "{}\n{}",
        k(&["describe", "pod", "hello"]).all(),
        agent.log()
    );
    k(&["logs", "hello"]).expect_ok("^joined 0\njoined 1\njoined 2\n$");

    // A restart reuses the credentials: no new CSRs, node stays Ready.
    agent.stop();
    agent.launch();
    wait_for(Duration::from_secs(30), "restarted agent serves", || {
        agent.log().matches("agent started").nth(1).map(|_| ())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let count = k(&["get", "csr", "-o", "name"]).stdout.lines().count();
    assert_eq!(
        count,
        2,
        "a restart asked for new certificates:\n{}",
        agent.log()
    );
    k(&["logs", "hello"]).expect_ok("joined 2");

    // Other client certificates wait for a human, and work once approved.
    let (pem, key) = user_request("jane", "developers");
    let csr = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: jane}}\nspec:\n  \
         request: {}\n  signerName: kubernetes.io/kube-apiserver-client\n  expirationSeconds: 86400\n  usages: [client auth]\n",
        base64::engine::general_purpose::STANDARD.encode(&pem)
    );
    cluster
        .kubectl_in(&["apply", "-f", "-"], Some(&csr))
        .expect_ok("created");
    cluster
        .kubectl_in(
            &["apply", "-f", "-"],
            Some(&csr.replace("name: jane", "name: jane-denied")),
        )
        .expect_ok("created");
    std::thread::sleep(Duration::from_secs(1));
    k(&["get", "csr", "jane"]).expect_ok(
        r"(?m)^jane +\S+ +kubernetes.io/kube-apiserver-client +skiff-admin +24h +Pending$",
    );
    k(&["certificate", "approve", "jane"]).expect_ok("approved");
    k(&["certificate", "deny", "jane-denied"]).expect_ok("denied");
    let cert = wait_for(Duration::from_secs(30), "jane's certificate", || {
        let out = k(&["get", "csr", "jane", "-o", "jsonpath={.status.certificate}"]);
        (!out.stdout.is_empty()).then(|| out.stdout.clone())
    })
    .unwrap();
    let cert = base64::engine::general_purpose::STANDARD
        .decode(cert)
        .unwrap();
    let (cert_path, key_path) = (
        scratch.path().join("jane.crt"),
        scratch.path().join("jane.key"),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    kubectl_as(
        &cluster,
        &bare,
        &[
            "--client-certificate",
            cert_path.to_str().unwrap(),
            "--client-key",
            key_path.to_str().unwrap(),
            "get",
            "pods",
        ],
    )
    .expect_ok("hello");
    std::thread::sleep(Duration::from_millis(500));
    k(&["get", "csr", "jane-denied"]).expect_ok(r"(?m) Denied$");
    k(&[
        "get",
        "csr",
        "jane-denied",
        "-o",
        "jsonpath={.status.certificate}",
    ])
    .expect_ok("^$");

    // Deleting the token stops new joins.
    skiffd(&cluster, &["token", "delete", &token_id]).expect_ok("deleted");
    agent_fails(&[
        "--server",
        &server,
        "--token",
        &token,
        "--ca-cert-hash",
        &hash,
    ])
    .expect_fail(1, "401 Unauthorized");

    k(&["delete", "pod", "hello", "--wait=true"]).expect_ok("deleted");
    agent.stop();
}
