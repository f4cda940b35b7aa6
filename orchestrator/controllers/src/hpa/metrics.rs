//! Reading metrics for the HPA through the API server: resource metrics from
//! `metrics.k8s.io/v1beta1` PodMetrics, and Pods/Object/External metrics from
//! `custom.metrics.k8s.io/v1beta2` and `external.metrics.k8s.io/v1beta1` when an adapter
//! serves them (an APIService makes them available; Skiff ships none).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use super::calculator::Sample;

/// A metrics read that failed, worded for the condition and event.
pub(crate) type FetchError = String;

fn milli(quantity: &str) -> Option<i64> {
    skiff_api::quantity::Quantity::parse(quantity)
        .ok()
        .map(|q| q.milli())
}

fn parse_time(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// A Go duration like `15.012s` or `1m0.5s`.
fn parse_window(v: &Value) -> Duration {
    let text = v.as_str().unwrap_or_default();
    let (minutes, rest) = match text.split_once('m') {
        Some((m, rest)) if !rest.starts_with('s') => (m.parse::<f64>().unwrap_or(0.0), rest),
        _ => (0.0, text),
    };
    let seconds = rest.trim_end_matches('s').parse::<f64>().unwrap_or(0.0);
    Duration::from_secs_f64(minutes * 60.0 + seconds)
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, FetchError> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request::<Value>(request).await.map_err(|e| match e {
        kube::Error::Api(s) => s.message,
        e => e.to_string(),
    })
}

fn query(selector: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("labelSelector", selector)
        .finish()
}

/// Per pod: `resource` usage summed over its containers (or of one container), milli-units.
pub(crate) async fn resource_metrics(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, Sample>, FetchError> {
    let path = format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods?{}",
        query(selector)
    );
    let list = get_json(client, &path)
        .await
        .map_err(|e| format!("unable to get metrics for resource {resource}: unable to fetch metrics from resource metrics API: {e}"))?;
    let mut out = BTreeMap::new();
    for item in list["items"].as_array().into_iter().flatten() {
        let Some(name) = item["metadata"]["name"].as_str() else {
            continue;
        };
        let mut total = 0i64;
        let mut found = false;
        for c in item["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|want| c["name"] != want) {
                continue;
            }
            if let Some(v) = c["usage"][resource].as_str().and_then(milli) {
                total += v;
                found = true;
            }
        }
        if !found {
            continue;
        }
        out.insert(
            name.to_owned(),
            Sample {
                milli: total,
                timestamp: parse_time(&item["timestamp"]).unwrap_or_else(Timestamp::now),
                window: parse_window(&item["window"]),
            },
        );
    }
    if out.is_empty() {
        return Err(format!(
            "unable to get metrics for resource {resource}: no metrics returned from resource metrics API"
        ));
    }
    Ok(out)
}

fn value_list(list: &Value) -> Vec<(String, i64, Timestamp)> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            Some((
                i["describedObject"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                milli(i["value"].as_str()?)?,
                parse_time(&i["timestamp"]).unwrap_or_else(Timestamp::now),
            ))
        })
        .collect()
}

/// A `Pods` metric per pod from the custom metrics API.
pub(crate) async fn pods_metric(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    metric: &str,
) -> Result<BTreeMap<String, Sample>, FetchError> {
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/{metric}?{}",
        query(selector)
    );
    let list = get_json(client, &path).await.map_err(|e| {
        format!(
            "unable to get metric {metric}: unable to fetch metrics from custom metrics API: {e}"
        )
    })?;
    Ok(value_list(&list)
        .into_iter()
        .map(|(pod, milli, timestamp)| {
            (
                pod,
                Sample {
                    milli,
                    timestamp,
                    window: Duration::ZERO,
                },
            )
        })
        .collect())
}

/// An `Object` metric of one object from the custom metrics API.
pub(crate) async fn object_metric(
    client: &kube::Client,
    namespace: &str,
    kind: &str,
    name: &str,
    metric: &str,
) -> Result<i64, FetchError> {
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let path = format!(
        "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/{plural}/{name}/{metric}"
    );
    let value = get_json(client, &path)
        .await
        .map_err(|e| format!("unable to get metric {metric}: {kind} on {namespace} {name}/unable to fetch metrics from custom metrics API: {e}"))?;
    let list = if value["kind"] == "MetricValueList" {
        value
    } else {
        serde_json::json!({"items": [value]})
    };
    value_list(&list)
        .first()
        .map(|(_, v, _)| *v)
        .ok_or_else(|| format!("unable to get metric {metric}: no value returned"))
}

/// An `External` metric, summed over its series, from the external metrics API.
pub(crate) async fn external_metric(
    client: &kube::Client,
    namespace: &str,
    metric: &str,
    selector: &str,
) -> Result<i64, FetchError> {
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}?{}",
        query(selector)
    );
    let list = get_json(client, &path)
        .await
        .map_err(|e| format!("unable to get external metric {namespace}/{metric}: unable to fetch metrics from external metrics API: {e}"))?;
    let total: i64 = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| milli(i["value"].as_str()?))
        .sum();
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_quantities() {
        assert_eq!(
            parse_window(&Value::from("15.012s")),
            Duration::from_millis(15_012)
        );
        assert_eq!(
            parse_window(&Value::from("1m0.5s")),
            Duration::from_millis(60_500)
        );
        // Like upstream's MilliValue, fractions of a milli round up.
        assert_eq!(milli("137505622n"), Some(138));
        assert_eq!(milli("250m"), Some(250));
        assert_eq!(milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
    }
}
