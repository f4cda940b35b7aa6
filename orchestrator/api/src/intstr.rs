//! `IntOrString` values such as `maxSurge: 25%`, resolved against a total the way upstream's
//! `intstr.GetScaledValueFromIntOrPercent` does.

use serde_json::Value;

/// An int-or-percent that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for IntOrString: invalid type: string is not a percentage")]
pub struct IntOrPercentError;

/// Resolve `value` against `total`, rounding a percentage up or down.
pub fn scaled_value(value: &Value, total: i64, round_up: bool) -> Result<i64, IntOrPercentError> {
    match value {
        Value::Number(n) => n.as_i64().ok_or(IntOrPercentError),
        Value::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or(IntOrPercentError)?;
            let product = percent * total;
            Ok(if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            })
        }
        _ => Err(IntOrPercentError),
    }
}

/// Whether the value is a percentage string.
pub fn is_percent(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.ends_with('%'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn percentages_round_like_upstream() {
        assert_eq!(scaled_value(&json!("25%"), 10, true), Ok(3));
        assert_eq!(scaled_value(&json!("25%"), 10, false), Ok(2));
        assert_eq!(scaled_value(&json!(2), 10, true), Ok(2));
        assert!(scaled_value(&json!("x"), 10, true).is_err());
    }
}
