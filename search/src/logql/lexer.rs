//! LogQL tokens. Numbers directly followed by a unit are durations (`5m`, `1h30m`, `250ms`) or
//! byte sizes (`20KB`, `1MiB`), as in Loki.

use super::ast::ParseError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    /// ns
    Duration(i64),
    Bytes(f64),
    /// Punctuation and operators, as written.
    Op(&'static str),
    Eof,
}

impl Tok {
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("IDENTIFIER {s:?}"),
            Tok::Str(s) => format!("STRING {s:?}"),
            Tok::Num(n) => format!("NUMBER {n}"),
            Tok::Duration(_) => "DURATION".into(),
            Tok::Bytes(_) => "BYTES".into(),
            Tok::Op(o) => format!("{o:?}"),
            Tok::Eof => "end of input".into(),
        }
    }
}

/// A token and the 1-based column where it starts.
pub type Spanned = (Tok, usize);

// Longest first, so `!=` wins over `!` and `|=` over `|`.
const OPS: [&str; 26] = [
    "|=", "|~", "!=", "!~", "=~", "==", ">=", "<=", "{", "}", "(", ")", "[", "]", ",", "=", "|",
    ">", "<", "+", "-", "*", "/", "%", "^", "!",
];

pub fn tokenize(input: &str) -> Result<Vec<Spanned>, ParseError> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |col: usize, message: String| ParseError { col, message };
    while i < chars.len() {
        let (at, c) = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '#' {
            // A comment to the end of the line.
            while i < chars.len() && chars[i].1 != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '"' || c == '`' {
            let (s, next) = string(&chars, i).map_err(|m| err(col, m))?;
            out.push((Tok::Str(s), col));
            i = next;
            continue;
        }
        if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(|n| n.1.is_ascii_digit()))
        {
            let (tok, next) = number(input, &chars, i).map_err(|m| err(col, m))?;
            out.push((tok, col));
            i = next;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].1.is_ascii_alphanumeric() || chars[i].1 == '_') {
                i += 1;
            }
            let end = chars.get(i).map(|c| c.0).unwrap_or(input.len());
            out.push((Tok::Ident(input[chars[start].0..end].to_owned()), col));
            continue;
        }
        let rest = &input[at..];
        match OPS.iter().find(|op| rest.starts_with(**op)) {
            Some(op) => {
                out.push((Tok::Op(op), col));
                i += op.chars().count();
            }
            None => {
                return Err(err(
                    col,
                    format!("syntax error: unexpected character {c:?}"),
                ));
            }
        }
    }
    out.push((Tok::Eof, chars.len() + 1));
    Ok(out)
}

fn string(chars: &[(usize, char)], start: usize) -> Result<(String, usize), String> {
    let quote = chars[start].1;
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i].1;
        if c == quote {
            return Ok((s, i + 1));
        }
        if c == '\\' && quote == '"' {
            i += 1;
            let Some(&(_, e)) = chars.get(i) else { break };
            match e {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                '\\' => s.push('\\'),
                '"' => s.push('"'),
                '\'' => s.push('\''),
                '0' => s.push('\0'),
                'u' => {
                    let hex: String = chars.iter().skip(i + 1).take(4).map(|c| c.1).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .ok_or_else(|| format!("invalid escape \\u{hex}"))?;
                    s.push(code);
                    i += 4;
                }
                other => {
                    return Err(format!(
                        "invalid escape \\{other} in a string (write \\\\ for a backslash, or use `…` for a raw string)"
                    ));
                }
            }
            i += 1;
            continue;
        }
        s.push(c);
        i += 1;
    }
    Err("syntax error: unterminated string".into())
}

fn number(input: &str, chars: &[(usize, char)], start: usize) -> Result<(Tok, usize), String> {
    let mut i = start;
    let byte = |i: usize| chars.get(i).map(|c| c.0).unwrap_or(input.len());
    while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == '.') {
        i += 1;
    }
    // An exponent: 1e3, 2.5E-2.
    if i < chars.len()
        && matches!(chars[i].1, 'e' | 'E')
        && chars.get(i + 1).is_some_and(|c| {
            c.1.is_ascii_digit()
                || ((c.1 == '-' || c.1 == '+')
                    && chars.get(i + 2).is_some_and(|d| d.1.is_ascii_digit()))
        })
    {
        i += 2;
        while i < chars.len() && chars[i].1.is_ascii_digit() {
            i += 1;
        }
    }
    let digits = &input[byte(start)..byte(i)];
    let value: f64 = digits
        .parse()
        .map_err(|_| format!("syntax error: {digits:?} is not a number"))?;
    if i >= chars.len() || !chars[i].1.is_ascii_alphabetic() {
        return Ok((Tok::Num(value), i));
    }
    // A unit follows: read number-unit groups (1h30m) up to the next non-alphanumeric.
    let mut end = i;
    while end < chars.len() && (chars[end].1.is_ascii_alphanumeric() || chars[end].1 == '.') {
        end += 1;
    }
    let text = &input[byte(start)..byte(end)];
    if let Some(bytes) = parse_bytes(text) {
        return Ok((Tok::Bytes(bytes), end));
    }
    match parse_duration(text) {
        Some(ns) => Ok((Tok::Duration(ns), end)),
        None => Err(format!(
            "syntax error: {text:?} is neither a duration (5m, 1h30m, 250ms) nor a byte size (20KB, 1MiB)"
        )),
    }
}

/// `1h30m`, `250ms`, `2d`, `1w` into ns.
pub fn parse_duration(text: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "w" => 7.0 * 86400e9,
            "y" => 365.0 * 86400e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += value * unit;
    }
    (total.is_finite() && total < i64::MAX as f64).then_some(total as i64)
}

pub fn parse_bytes(text: &str) -> Option<f64> {
    let n = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let value: f64 = text[..n].parse().ok()?;
    let unit = match text[n..].to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" | "ki" => 1024.0,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(value * unit)
}

/// A label value as a number for a numeric label filter: plain, a duration (seconds) or a
/// byte size.
pub fn value_as_number(v: &str) -> Option<f64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<f64>() {
        return Some(n);
    }
    if let Some(ns) = parse_duration(v) {
        return Some(ns as f64 / 1e9);
    }
    parse_bytes(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t: Vec<Tok> = tokenize(r#"rate({app=~"a.*"} |= "x\"y" [5m]) > 1.5e1 # note"#)
            .unwrap()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(t[0], Tok::Ident("rate".into()));
        assert_eq!(t[4], Tok::Op("=~"));
        assert_eq!(t[7], Tok::Op("|="));
        assert_eq!(t[8], Tok::Str("x\"y".into()));
        assert_eq!(t[10], Tok::Duration(300_000_000_000));
        assert_eq!(t[13], Tok::Op(">"));
        assert_eq!(t[14], Tok::Num(15.0));
        assert_eq!(t[15], Tok::Eof);
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(value_as_number("1.5s"), Some(1.5));
        assert_eq!(value_as_number("2KiB"), Some(2048.0));
        assert_eq!(tokenize("20KB").unwrap()[0].0, Tok::Bytes(20_000.0));
        assert!(tokenize("3 apples").is_ok());
        assert!(tokenize("3apples").is_err());
        assert_eq!(tokenize(r#""open"#).unwrap_err().col, 1);
        assert_eq!(tokenize("{a=\"b\"} ;").unwrap_err().col, 9);
    }
}
