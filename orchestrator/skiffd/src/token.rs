//! `skiffd token`: bootstrap tokens that let new nodes join (kubeadm's `token` command). A token
//! is a Secret `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`; the API
//! server authenticates it as `system:bootstrap:<id>` in `system:bootstrappers`, which may only
//! ask for a node certificate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};

use crate::up::{default_data_dir, kube_client};

/// The group every Skiff-created token adds (kubeadm's is `…:kubeadm:default-node-token`).
const DEFAULT_GROUP: &str = "system:bootstrappers:skiff:default-node-token";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

#[derive(Args, Debug)]
pub(crate) struct TokenArgs {
    /// The server's data directory (its admin kubeconfig is used unless --kubeconfig is given).
    #[arg(long, env = "SKIFF_DATA_DIR", default_value_os_t = default_data_dir(), global = true)]
    data_dir: PathBuf,
    /// An admin kubeconfig.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a bootstrap token and print it.
    Create {
        /// How long the token stays valid (`24h`, `30m`, `7d`; `0` never expires).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: Duration,
        /// A human-readable note kept with the token.
        #[arg(long)]
        description: Option<String>,
        /// Print the whole `skiffd agent …` command a new node runs.
        #[arg(long)]
        print_join_command: bool,
    },
    /// List bootstrap tokens.
    List,
    /// Delete bootstrap tokens (by token or by its 6-character id).
    Delete {
        #[arg(required = true)]
        tokens: Vec<String>,
    },
}

/// `24h`, `90m`, `30s`, `7d`, or a number of seconds.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 24h, 30m or 0"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

pub(crate) fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// The Secret `kube-system/bootstrap-token-<id>` for the token `<id>.<secret>`, expiring after
/// `ttl` (never when zero).
pub(crate) fn token_secret(
    id: &str,
    secret: &str,
    ttl: Duration,
    description: Option<String>,
) -> anyhow::Result<Secret> {
    let mut data = BTreeMap::from([
        ("token-id".to_owned(), id.to_owned()),
        ("token-secret".to_owned(), secret.to_owned()),
        (
            "usage-bootstrap-authentication".to_owned(),
            "true".to_owned(),
        ),
        ("usage-bootstrap-signing".to_owned(), "true".to_owned()),
        ("auth-extra-groups".to_owned(), DEFAULT_GROUP.to_owned()),
    ]);
    if !ttl.is_zero() {
        let expires =
            jiff::Timestamp::now() + jiff::SignedDuration::from_secs(i64::try_from(ttl.as_secs())?);
        data.insert(
            "expiration".into(),
            expires.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        );
    }
    if let Some(d) = description {
        data.insert("description".into(), d);
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(format!("bootstrap-token-{id}")),
            namespace: Some("kube-system".into()),
            ..ObjectMeta::default()
        },
        type_: Some(TOKEN_TYPE.into()),
        string_data: Some(data),
        ..Secret::default()
    })
}

/// Split a bootstrap token `<6 chars>.<16 chars>` of `[a-z0-9]` into id and secret.
pub(crate) fn parse_token(token: &str) -> anyhow::Result<(&str, &str)> {
    let valid = |part: &str, len: usize| {
        part.len() == len
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    match token.split_once('.') {
        Some((id, secret)) if valid(id, 6) && valid(secret, 16) => Ok((id, secret)),
        _ => bail!(
            "a bootstrap token is 6 and 16 characters of [a-z0-9] joined by a dot \
             (`abcdef.0123456789abcdef`)"
        ),
    }
}

pub(crate) async fn run(args: TokenArgs) -> anyhow::Result<()> {
    let kubeconfig = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("kubeconfig"));
    let client = kube_client(&kubeconfig)
        .await
        .with_context(|| format!("using the admin kubeconfig {}", kubeconfig.display()))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    match args.command {
        TokenCommand::Create {
            ttl,
            description,
            print_join_command,
        } => {
            let (id, secret) = (random_chars(6), random_chars(16));
            let object = token_secret(&id, &secret, ttl, description)?;
            secrets
                .create(&PostParams::default(), &object)
                .await
                .context("creating the token Secret")?;
            let token = format!("{id}.{secret}");
            if print_join_command {
                let (server, ca_pem) = cluster_info(client).await?;
                let hash = skiff_agent::bootstrap::ca_cert_hash(&ca_pem)?;
                println!("skiffd agent --server {server} --token {token} --ca-cert-hash {hash}");
            } else {
                println!("{token}");
            }
        }
        TokenCommand::List => {
            let list = secrets
                .list(&ListParams::default().fields(&format!("type={TOKEN_TYPE}")))
                .await?;
            println!(
                "{:<24} {:<8} {:<21} {:<32} {:<24} EXTRA GROUPS",
                "TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION"
            );
            for s in list {
                let field = |k: &str| {
                    s.data
                        .as_ref()
                        .and_then(|d| d.get(k))
                        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                };
                let (Some(id), Some(secret)) = (field("token-id"), field("token-secret")) else {
                    continue;
                };
                let expires = field("expiration");
                let ttl = match expires.as_deref().map(str::parse::<jiff::Timestamp>) {
                    Some(Ok(t)) => {
                        let left = t.as_second() - jiff::Timestamp::now().as_second();
                        if left <= 0 {
                            "<expired>".to_owned()
                        } else if left >= 3600 {
                            format!("{}h", left / 3600)
                        } else {
                            format!("{}m", (left + 59) / 60)
                        }
                    }
                    _ => "<forever>".to_owned(),
                };
                let usages: Vec<&str> = ["authentication", "signing"]
                    .into_iter()
                    .filter(|u| field(&format!("usage-bootstrap-{u}")).as_deref() == Some("true"))
                    .collect();
                println!(
                    "{:<24} {:<8} {:<21} {:<32} {:<24} {}",
                    format!("{id}.{secret}"),
                    ttl,
                    expires.unwrap_or_else(|| "<never>".into()),
                    usages.join(","),
                    field("description").unwrap_or_else(|| "<none>".into()),
                    field("auth-extra-groups").unwrap_or_default()
                );
            }
        }
        TokenCommand::Delete { tokens } => {
            for t in tokens {
                let id = t.split('.').next().unwrap_or_default();
                if id.len() != 6
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                {
                    bail!("{t:?} is neither a token nor a token id ([a-z0-9]{{6}})");
                }
                secrets
                    .delete(&format!("bootstrap-token-{id}"), &DeleteParams::default())
                    .await
                    .with_context(|| format!("deleting token {id}"))?;
                println!("bootstrap token {id:?} deleted");
            }
        }
    }
    Ok(())
}

/// The advertised server and CA from `kube-public/cluster-info`.
async fn cluster_info(client: kube::Client) -> anyhow::Result<(String, String)> {
    let cm = Api::<ConfigMap>::namespaced(client, "kube-public")
        .get("cluster-info")
        .await
        .context("reading kube-public/cluster-info")?;
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get("kubeconfig"))
        .context("cluster-info has no kubeconfig")?;
    let config = kube::config::Kubeconfig::from_yaml(text)?;
    let cluster = config
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("cluster-info names no cluster")?;
    let server = cluster.server.context("cluster-info names no server")?;
    let ca = cluster
        .certificate_authority_data
        .context("cluster-info names no CA")?;
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.decode(ca.trim())?;
    Ok((server, String::from_utf8(ca)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_six_and_sixteen_lowercase_alphanumerics() {
        assert_eq!(
            parse_token("skiffc.c0mp05e5ecre7000").unwrap(),
            ("skiffc", "c0mp05e5ecre7000")
        );
        for bad in [
            "skiffc",
            "Skiffc.c0mp05e5ecre7000",
            "skiff.c0mp05e5ecre7000",
            "skiffc.c0mp05e5ecre700",
            "skiffc.c0mp05e5ecre7000x",
            "skiffc-c0mp05e5ecre7000",
        ] {
            assert!(parse_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_secret_without_ttl_never_expires() {
        let s = token_secret("abcdef", "0123456789abcdef", Duration::ZERO, None).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        let data = s.string_data.unwrap();
        assert!(!data.contains_key("expiration"));
        assert_eq!(data["token-id"], "abcdef");
        let s = token_secret("abcdef", "0123456789abcdef", Duration::from_secs(60), None).unwrap();
        assert!(s.string_data.unwrap().contains_key("expiration"));
    }

    #[test]
    fn ttls_parse_like_kubeadm_durations() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_ttl("forever").is_err());
        assert!(parse_ttl("5y").is_err());
    }

    #[test]
    fn generated_ids_have_the_token_shape() {
        let id = random_chars(6);
        assert_eq!(id.len(), 6);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
