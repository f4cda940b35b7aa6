//! Kubernetes resource quantities (`100m`, `0.5`, `128Mi`, `1G`, `1e3`), parsed exactly as
//! apimachinery's `resource.ParseQuantity` accepts them. k8s-openapi keeps quantities as
//! strings; this module gives them a value.

use std::fmt;

/// The regular expression upstream quotes in its error message.
pub const QUANTITY_PATTERN: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '{QUANTITY_PATTERN}'")]
pub struct QuantityError;

/// A parsed quantity, held exactly in nano-units (10^-9), which covers every suffix from `n`
/// to `E`/`Ei` without rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    nanos: i128,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parse a quantity string.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let s = input.trim();
        if s.is_empty() || s != input {
            return Err(QuantityError);
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(QuantityError);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // Scale: value = digits × 10^exp10 × 2^exp2.
        let (exp10, exp2): (i32, u32) = match suffix {
            "" => (0, 0),
            "n" => (-9, 0),
            "u" => (-6, 0),
            "m" => (-3, 0),
            "k" => (3, 0),
            "M" => (6, 0),
            "G" => (9, 0),
            "T" => (12, 0),
            "P" => (15, 0),
            "E" => (18, 0),
            "Ki" => (0, 10),
            "Mi" => (0, 20),
            "Gi" => (0, 30),
            "Ti" => (0, 40),
            "Pi" => (0, 50),
            "Ei" => (0, 60),
            s if s.starts_with(['e', 'E']) => {
                let exp = &s[1..];
                let digits = exp.trim_start_matches(['+', '-']);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError);
                }
                let e: i32 = exp.parse().map_err(|_| QuantityError)?;
                if !(-30..=30).contains(&e) {
                    return Err(QuantityError);
                }
                (e, 0)
            }
            _ => return Err(QuantityError),
        };
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let mantissa: i128 = if digits.is_empty() {
            0
        } else if digits.len() > 30 {
            return Err(QuantityError);
        } else {
            digits.parse().map_err(|_| QuantityError)?
        };
        // nanos = mantissa × 10^(exp10 − frac_len + 9) × 2^exp2
        let shift = exp10 - frac_part.len() as i32 + 9;
        let mut nanos = mantissa.checked_mul(1i128 << exp2).ok_or(QuantityError)?;
        if shift >= 0 {
            nanos = nanos
                .checked_mul(10i128.checked_pow(shift as u32).ok_or(QuantityError)?)
                .ok_or(QuantityError)?;
        } else {
            // Sub-nano precision rounds up, as upstream rounds quantities up to their scale.
            let div = 10i128.checked_pow((-shift) as u32).ok_or(QuantityError)?;
            nanos = (nanos + div - 1) / div;
        }
        Ok(Quantity {
            nanos: if negative { -nanos } else { nanos },
        })
    }

    /// A quantity of whole units.
    pub fn from_units(units: i64) -> Self {
        Quantity {
            nanos: units as i128 * NANO,
        }
    }

    /// A quantity of milli-units.
    pub fn from_milli(milli: i64) -> Self {
        Quantity {
            nanos: milli as i128 * 1_000_000,
        }
    }

    /// Value in milli-units, rounded up (upstream `MilliValue`): CPU in millicores.
    pub fn milli(&self) -> i64 {
        div_ceil(self.nanos, 1_000_000) as i64
    }

    /// Value in whole units, rounded up (upstream `Value`): memory in bytes.
    pub fn value(&self) -> i64 {
        div_ceil(self.nanos, NANO) as i64
    }

    /// Value as a float, for ratios.
    pub fn as_f64(&self) -> f64 {
        self.nanos as f64 / NANO as f64
    }

    /// Value in nano-units.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

/// Format millicores as `kubectl top` does: `250m`, or whole cores as `2`.
pub fn format_cpu_milli(milli: i64) -> String {
    if milli % 1000 == 0 && milli != 0 {
        format!("{}", milli / 1000)
    } else {
        format!("{milli}m")
    }
}

/// Format bytes as `kubectl top` does: `Mi` rounded.
pub fn format_memory_mi(bytes: i64) -> String {
    format!("{}Mi", bytes / (1024 * 1024))
}

impl fmt::Display for Quantity {
    /// The canonical-ish form: whole numbers plain, fractions in `m` or `n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos % NANO == 0 {
            write!(f, "{}", self.nanos / NANO)
        } else if self.nanos % 1_000_000 == 0 {
            write!(f, "{}m", self.nanos / 1_000_000)
        } else {
            write!(f, "{}n", self.nanos)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, milli: i64, value: i64) {
        let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!((q.milli(), q.value()), (milli, value), "{input}");
    }

    #[test]
    fn parses_like_upstream() {
        check("100m", 100, 1);
        check("0.5", 500, 1);
        check("1", 1000, 1);
        check("2.5", 2500, 3);
        check("128Mi", 128 * 1024 * 1024 * 1000, 128 * 1024 * 1024);
        check("1G", 1_000_000_000_000, 1_000_000_000);
        check("1Ki", 1_024_000, 1024);
        check("1e3", 1_000_000, 1000);
        check("1E-3", 1, 1);
        check("1.5Gi", 1_610_612_736_000, 1_610_612_736);
        check("0", 0, 0);
        check("+5", 5000, 5);
        check("-1", -1000, -1);
        check("1n", 1, 1);
        check("250u", 1, 1);
        check(".5", 500, 1);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "abc", "1.2.3", "10 m", "1Zi", "1mi", "m", "1e", "--1", " 1",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn orders_across_suffixes() {
        assert!(Quantity::parse("1Gi").unwrap() > Quantity::parse("1G").unwrap());
        assert!(Quantity::parse("500m").unwrap() < Quantity::parse("1").unwrap());
        assert_eq!(format_cpu_milli(250), "250m");
        assert_eq!(format_cpu_milli(2000), "2");
        assert_eq!(Quantity::parse("500m").unwrap().to_string(), "500m");
    }
}
