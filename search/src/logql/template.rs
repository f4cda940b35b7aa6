//! `line_format` and `label_format` templates beyond `{{.label}}`: Go's text/template (gtmpl)
//! with Loki's functions — string functions of Go and Sprig, regular expressions, alignment,
//! base64 and URL coding, integer and float arithmetic, and `__line__`/`__timestamp__`.
//!
//! gtmpl's functions are plain `fn`s with no state, so the two per-line functions are data:
//! the source's bare `__line__` and `__timestamp__` are read as `.__line__` and
//! `.__timestamp__`. The data are the line's labels as strings, and, as Loki's
//! `map[string]string` gives, a label the line does not have reads as empty text.

use std::collections::HashMap;
use std::sync::Arc;

use gtmpl::{Context, Func, FuncError, Template, Value};
use gtmpl_value::Number;

/// A parsed Go template.
#[derive(Clone)]
pub struct GoTemplate {
    source: String,
    template: Arc<Template>,
    /// Every `.name` the template reads, so missing labels can be given as "".
    names: Vec<String>,
}

impl std::fmt::Debug for GoTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GoTemplate({:?})", self.source)
    }
}

impl PartialEq for GoTemplate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

const FUNCS: &[(&str, Func)] = &[
    ("ToLower", lower),
    ("ToUpper", upper),
    ("lower", lower),
    ("upper", upper),
    ("title", title),
    ("Replace", go_replace),
    ("replace", sprig_replace),
    ("Trim", go_trim),
    ("TrimLeft", go_trim_left),
    ("TrimRight", go_trim_right),
    ("TrimPrefix", go_trim_prefix),
    ("TrimSuffix", go_trim_suffix),
    ("TrimSpace", trim_space),
    ("trim", trim_space),
    ("trunc", trunc),
    ("substr", substr),
    ("contains", contains),
    ("hasPrefix", has_prefix),
    ("hasSuffix", has_suffix),
    ("repeat", repeat),
    ("default", default),
    ("regexReplaceAll", regex_replace_all),
    ("regexReplaceAllLiteral", regex_replace_all_literal),
    ("count", count),
    ("alignLeft", align_left),
    ("alignRight", align_right),
    ("indent", indent),
    ("nindent", nindent),
    ("b64enc", b64enc),
    ("b64dec", b64dec),
    ("urlencode", urlencode),
    ("urldecode", urldecode),
    ("unixEpoch", unix_epoch),
    ("unixEpochMillis", unix_epoch_millis),
    ("unixEpochNanos", unix_epoch_nanos),
    ("add", add),
    ("sub", sub),
    ("mul", mul),
    ("div", div),
    ("mod", modulo),
    ("addf", addf),
    ("subf", subf),
    ("mulf", mulf),
    ("divf", divf),
    ("int", int),
    ("float64", float64),
    ("round", round),
    ("floor", floor),
    ("ceil", ceil),
    ("max", max),
    ("min", min),
    ("maxf", maxf),
    ("minf", minf),
];

impl GoTemplate {
    pub fn parse(source: &str) -> Result<GoTemplate, String> {
        // gtmpl's lexer never returns from some actions left open at the end ("{{ .a "), and
        // the text comes from whoever sends a query.
        check_actions_closed(source)?;
        let rewritten = per_line_functions_as_data(source);
        let mut template = Template::default();
        template.add_funcs(FUNCS);
        template
            .parse(rewritten.clone())
            .map_err(|e| format!("template {source:?}: {e}"))?;
        let field = regex::Regex::new(r"\.([A-Za-z_][A-Za-z0-9_]*)").expect("a valid pattern");
        let mut names: Vec<String> = field
            .captures_iter(&rewritten)
            .map(|c| c[1].to_owned())
            .collect();
        names.sort();
        names.dedup();
        Ok(GoTemplate {
            source: source.to_owned(),
            template: Arc::new(template),
            names,
        })
    }

    /// The template over one line: its text, time (Unix ns) and labels.
    pub fn render<'a>(
        &self,
        line: &str,
        ts: i64,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<String, String> {
        let mut data: HashMap<String, Value> = self
            .names
            .iter()
            .map(|n| (n.clone(), Value::from("")))
            .collect();
        for (k, v) in labels {
            data.insert(k.to_owned(), v.into());
        }
        data.insert("__line__".into(), line.into());
        data.insert("__timestamp__".into(), timestamp_text(ts).into());
        self.template
            .render(&Context::from(Value::Map(data)))
            .map_err(|e| e.to_string())
    }
}

/// An error unless every `{{` has its `}}` (quoted strings and comments inside skipped).
fn check_actions_closed(source: &str) -> Result<(), String> {
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        let action = rest[open + 2..].trim_start_matches('-').trim_start();
        let unclosed = || format!("template {source:?}: an action opened with {{{{ is not closed");
        let after = if let Some(comment) = action.strip_prefix("/*") {
            let end = comment.find("*/").ok_or_else(unclosed)?;
            &comment[end + 2..]
        } else {
            let mut chars = action.char_indices();
            let mut close = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' | '\'' => {
                        let mut escaped = false;
                        for (_, q) in chars.by_ref() {
                            match q {
                                '\\' if !escaped => escaped = true,
                                q if q == c && !escaped => break,
                                _ => escaped = false,
                            }
                        }
                    }
                    '`' => {
                        chars.by_ref().find(|(_, q)| *q == '`');
                    }
                    '}' if action[i..].starts_with("}}") => {
                        close = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            &action[close.ok_or_else(unclosed)?..]
        };
        rest = after.find("}}").map_or("", |c| &after[c + 2..]);
    }
    Ok(())
}

/// Bare `__line__`/`__timestamp__` inside actions (outside quoted strings) become field reads.
fn per_line_functions_as_data(source: &str) -> String {
    let mut out = String::with_capacity(source.len() + 8);
    let mut rest = source;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let end = after.find("}}").map_or(after.len(), |c| c + 2);
        let action = &after[..end];
        let (mut quoted, mut prev) = (None::<char>, ' ');
        let mut i = 0;
        while i < action.len() {
            let c = action[i..].chars().next().expect("in bounds");
            match quoted {
                Some(q) if c == q && prev != '\\' => quoted = None,
                Some(_) => {}
                None if c == '"' || c == '`' => quoted = Some(c),
                None => {
                    for name in ["__line__", "__timestamp__"] {
                        if action[i..].starts_with(name)
                            && !(prev == '.' || prev == '$' || prev.is_alphanumeric())
                        {
                            out.push('.');
                        }
                    }
                }
            }
            out.push(c);
            prev = c;
            i += c.len_utf8();
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn timestamp_text(ts: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(ts))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        v => v.to_string(),
    }
}

fn int_of(v: &Value) -> Result<i64, FuncError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or(FuncError::UnableToConvertFromValue),
        v => {
            let t = text(v);
            t.trim()
                .parse::<i64>()
                .or_else(|_| t.trim().parse::<f64>().map(|f| f as i64))
                .map_err(|_| FuncError::Generic(format!("{t:?} is not a number")))
        }
    }
}

fn float_of(v: &Value) -> Result<f64, FuncError> {
    match v {
        Value::Number(n) => (n.as_f64())
            .or_else(|| n.as_i64().map(|i| i as f64))
            .or_else(|| n.as_u64().map(|u| u as f64))
            .ok_or(FuncError::UnableToConvertFromValue),
        v => {
            let t = text(v);
            t.trim()
                .parse::<f64>()
                .map_err(|_| FuncError::Generic(format!("{t:?} is not a number")))
        }
    }
}

fn args<'a, const N: usize>(name: &str, a: &'a [Value]) -> Result<&'a [Value; N], FuncError> {
    a.try_into()
        .map_err(|_| FuncError::ExactlyXArgs(name.to_owned(), N))
}

fn string_fn(name: &str, a: &[Value], f: impl Fn(&str) -> String) -> Result<Value, FuncError> {
    let [s] = args::<1>(name, a)?;
    Ok(f(&text(s)).into())
}

fn lower(a: &[Value]) -> Result<Value, FuncError> {
    string_fn("lower", a, str::to_lowercase)
}
fn upper(a: &[Value]) -> Result<Value, FuncError> {
    string_fn("upper", a, str::to_uppercase)
}
fn title(a: &[Value]) -> Result<Value, FuncError> {
    string_fn("title", a, |s| {
        let mut out = String::with_capacity(s.len());
        let mut start = true;
        for c in s.chars() {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.push(c);
            }
            start = c.is_whitespace();
        }
        out
    })
}
fn trim_space(a: &[Value]) -> Result<Value, FuncError> {
    string_fn("TrimSpace", a, |s| s.trim().to_owned())
}
fn b64enc(a: &[Value]) -> Result<Value, FuncError> {
    use base64::Engine;
    string_fn("b64enc", a, |s| {
        base64::engine::general_purpose::STANDARD.encode(s)
    })
}
fn b64dec(a: &[Value]) -> Result<Value, FuncError> {
    use base64::Engine;
    let [s] = args::<1>("b64dec", a)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text(s))
        .map_err(|e| FuncError::Generic(format!("b64dec: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned().into())
}
fn urlencode(a: &[Value]) -> Result<Value, FuncError> {
    string_fn("urlencode", a, |s| {
        form_urlencoded::byte_serialize(s.as_bytes()).collect()
    })
}
fn urldecode(a: &[Value]) -> Result<Value, FuncError> {
    string_fn("urldecode", a, |s| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    })
}

/// Go's `strings.Replace(s, old, new, n)`, n < 0 for all.
fn go_replace(a: &[Value]) -> Result<Value, FuncError> {
    let [s, old, new, n] = args::<4>("Replace", a)?;
    let (s, old, new) = (text(s), text(old), text(new));
    Ok(match int_of(n)? {
        n if n < 0 => s.replace(&old, &new),
        n => s.replacen(&old, &new, n as usize),
    }
    .into())
}
/// Sprig's `replace old new s`.
fn sprig_replace(a: &[Value]) -> Result<Value, FuncError> {
    let [old, new, s] = args::<3>("replace", a)?;
    Ok(text(s).replace(&text(old), &text(new)).into())
}
fn go_trim(a: &[Value]) -> Result<Value, FuncError> {
    let [s, set] = args::<2>("Trim", a)?;
    let set = text(set);
    Ok(text(s).trim_matches(|c| set.contains(c)).to_owned().into())
}
fn go_trim_left(a: &[Value]) -> Result<Value, FuncError> {
    let [s, set] = args::<2>("TrimLeft", a)?;
    let set = text(set);
    Ok(text(s)
        .trim_start_matches(|c| set.contains(c))
        .to_owned()
        .into())
}
fn go_trim_right(a: &[Value]) -> Result<Value, FuncError> {
    let [s, set] = args::<2>("TrimRight", a)?;
    let set = text(set);
    Ok(text(s)
        .trim_end_matches(|c| set.contains(c))
        .to_owned()
        .into())
}
fn go_trim_prefix(a: &[Value]) -> Result<Value, FuncError> {
    let [s, p] = args::<2>("TrimPrefix", a)?;
    let (s, p) = (text(s), text(p));
    Ok(s.strip_prefix(p.as_str()).unwrap_or(&s).to_owned().into())
}
fn go_trim_suffix(a: &[Value]) -> Result<Value, FuncError> {
    let [s, p] = args::<2>("TrimSuffix", a)?;
    let (s, p) = (text(s), text(p));
    Ok(s.strip_suffix(p.as_str()).unwrap_or(&s).to_owned().into())
}
/// Sprig's `trunc n s`: the first n characters (the last -n when negative).
fn trunc(a: &[Value]) -> Result<Value, FuncError> {
    let [n, s] = args::<2>("trunc", a)?;
    let (n, s) = (int_of(n)?, text(s));
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i64;
    Ok(match n {
        n if n >= 0 => chars[..n.min(len) as usize].iter().collect::<String>(),
        n => chars[(len + n).max(0) as usize..].iter().collect(),
    }
    .into())
}
/// Sprig's `substr start end s` (end < 0: to the end).
fn substr(a: &[Value]) -> Result<Value, FuncError> {
    let [start, end, s] = args::<3>("substr", a)?;
    let chars: Vec<char> = text(s).chars().collect();
    let len = chars.len() as i64;
    let start = int_of(start)?.clamp(0, len);
    let end = match int_of(end)? {
        e if e < 0 => len,
        e => e.clamp(start, len),
    };
    Ok(chars[start as usize..end as usize]
        .iter()
        .collect::<String>()
        .into())
}
fn contains(a: &[Value]) -> Result<Value, FuncError> {
    let [sub, s] = args::<2>("contains", a)?;
    Ok(text(s).contains(&text(sub)).into())
}
fn has_prefix(a: &[Value]) -> Result<Value, FuncError> {
    let [p, s] = args::<2>("hasPrefix", a)?;
    Ok(text(s).starts_with(&text(p)).into())
}
fn has_suffix(a: &[Value]) -> Result<Value, FuncError> {
    let [p, s] = args::<2>("hasSuffix", a)?;
    Ok(text(s).ends_with(&text(p)).into())
}
fn repeat(a: &[Value]) -> Result<Value, FuncError> {
    let [n, s] = args::<2>("repeat", a)?;
    Ok(text(s).repeat(int_of(n)?.clamp(0, 10_000) as usize).into())
}
/// Sprig's `default d v`: v, or d when v is empty.
fn default(a: &[Value]) -> Result<Value, FuncError> {
    match a {
        [d] => Ok(d.clone()),
        [d, v] => Ok(if text(v).is_empty() {
            d.clone()
        } else {
            v.clone()
        }),
        _ => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}
fn regex_of(re: &Value) -> Result<regex::Regex, FuncError> {
    regex::Regex::new(&text(re)).map_err(|e| FuncError::Generic(format!("regex: {e}")))
}
/// `regexReplaceAll re s repl`, `$1` expanding to groups.
fn regex_replace_all(a: &[Value]) -> Result<Value, FuncError> {
    let [re, s, repl] = args::<3>("regexReplaceAll", a)?;
    Ok(regex_of(re)?
        .replace_all(&text(s), text(repl).as_str())
        .into_owned()
        .into())
}
fn regex_replace_all_literal(a: &[Value]) -> Result<Value, FuncError> {
    let [re, s, repl] = args::<3>("regexReplaceAllLiteral", a)?;
    Ok(regex_of(re)?
        .replace_all(&text(s), regex::NoExpand(&text(repl)))
        .into_owned()
        .into())
}
/// `count re s`: how many times the pattern occurs.
fn count(a: &[Value]) -> Result<Value, FuncError> {
    let [re, s] = args::<2>("count", a)?;
    Ok(Value::Number(Number::from(
        regex_of(re)?.find_iter(&text(s)).count() as i64,
    )))
}
fn pad(name: &str, a: &[Value], left: bool) -> Result<Value, FuncError> {
    let [n, s] = args::<2>(name, a)?;
    let n = int_of(n)?.max(0) as usize;
    let s = text(s);
    let chars: Vec<char> = s.chars().collect();
    Ok(if chars.len() >= n {
        chars[..n].iter().collect::<String>()
    } else if left {
        format!("{s:<n$}")
    } else {
        format!("{s:>n$}")
    }
    .into())
}
fn align_left(a: &[Value]) -> Result<Value, FuncError> {
    pad("alignLeft", a, true)
}
fn align_right(a: &[Value]) -> Result<Value, FuncError> {
    pad("alignRight", a, false)
}
fn indent(a: &[Value]) -> Result<Value, FuncError> {
    let [n, s] = args::<2>("indent", a)?;
    let pad = " ".repeat(int_of(n)?.clamp(0, 1_000) as usize);
    Ok(format!("{pad}{}", text(s).replace('\n', &format!("\n{pad}"))).into())
}
fn nindent(a: &[Value]) -> Result<Value, FuncError> {
    Ok(format!("\n{}", text(&indent(a)?)).into())
}
fn epoch(name: &str, a: &[Value], per_second: i128) -> Result<Value, FuncError> {
    let [t] = args::<1>(name, a)?;
    let t: jiff::Timestamp = text(t)
        .parse()
        .map_err(|e| FuncError::Generic(format!("{name}: {e}")))?;
    let n = t.as_nanosecond() / (1_000_000_000 / per_second);
    Ok(Value::Number(Number::from(n as i64)))
}
fn unix_epoch(a: &[Value]) -> Result<Value, FuncError> {
    epoch("unixEpoch", a, 1)
}
fn unix_epoch_millis(a: &[Value]) -> Result<Value, FuncError> {
    epoch("unixEpochMillis", a, 1_000)
}
fn unix_epoch_nanos(a: &[Value]) -> Result<Value, FuncError> {
    epoch("unixEpochNanos", a, 1_000_000_000)
}
fn int_op(name: &str, a: &[Value], f: fn(i64, i64) -> Option<i64>) -> Result<Value, FuncError> {
    let [x, y] = args::<2>(name, a)?;
    let r = f(int_of(x)?, int_of(y)?)
        .ok_or_else(|| FuncError::Generic(format!("{name}: division by zero or overflow")))?;
    Ok(Value::Number(Number::from(r)))
}
fn float_op(name: &str, a: &[Value], f: fn(f64, f64) -> f64) -> Result<Value, FuncError> {
    let [x, y] = args::<2>(name, a)?;
    Ok(Value::Number(Number::from(f(float_of(x)?, float_of(y)?))))
}
fn add(a: &[Value]) -> Result<Value, FuncError> {
    int_op("add", a, i64::checked_add)
}
fn sub(a: &[Value]) -> Result<Value, FuncError> {
    int_op("sub", a, i64::checked_sub)
}
fn mul(a: &[Value]) -> Result<Value, FuncError> {
    int_op("mul", a, i64::checked_mul)
}
fn div(a: &[Value]) -> Result<Value, FuncError> {
    int_op("div", a, i64::checked_div)
}
fn modulo(a: &[Value]) -> Result<Value, FuncError> {
    int_op("mod", a, i64::checked_rem)
}
fn max(a: &[Value]) -> Result<Value, FuncError> {
    int_op("max", a, |x, y| Some(x.max(y)))
}
fn min(a: &[Value]) -> Result<Value, FuncError> {
    int_op("min", a, |x, y| Some(x.min(y)))
}
fn addf(a: &[Value]) -> Result<Value, FuncError> {
    float_op("addf", a, |x, y| x + y)
}
fn subf(a: &[Value]) -> Result<Value, FuncError> {
    float_op("subf", a, |x, y| x - y)
}
fn mulf(a: &[Value]) -> Result<Value, FuncError> {
    float_op("mulf", a, |x, y| x * y)
}
fn divf(a: &[Value]) -> Result<Value, FuncError> {
    float_op("divf", a, |x, y| x / y)
}
fn maxf(a: &[Value]) -> Result<Value, FuncError> {
    float_op("maxf", a, f64::max)
}
fn minf(a: &[Value]) -> Result<Value, FuncError> {
    float_op("minf", a, f64::min)
}
fn int(a: &[Value]) -> Result<Value, FuncError> {
    let [x] = args::<1>("int", a)?;
    Ok(Value::Number(Number::from(int_of(x)?)))
}
fn float64(a: &[Value]) -> Result<Value, FuncError> {
    let [x] = args::<1>("float64", a)?;
    Ok(Value::Number(Number::from(float_of(x)?)))
}
/// `round x digits` (Sprig).
fn round(a: &[Value]) -> Result<Value, FuncError> {
    let (x, digits) = match a {
        [x] => (float_of(x)?, 0),
        [x, d] => (float_of(x)?, int_of(d)?.clamp(0, 15)),
        _ => return Err(FuncError::AtLeastXArgs("round".into(), 1)),
    };
    let scale = 10f64.powi(digits as i32);
    Ok(Value::Number(Number::from((x * scale).round() / scale)))
}
fn floor(a: &[Value]) -> Result<Value, FuncError> {
    let [x] = args::<1>("floor", a)?;
    Ok(Value::Number(Number::from(float_of(x)?.floor())))
}
fn ceil(a: &[Value]) -> Result<Value, FuncError> {
    let [x] = args::<1>("ceil", a)?;
    Ok(Value::Number(Number::from(float_of(x)?.ceil())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, labels: &[(&str, &str)]) -> String {
        GoTemplate::parse(t)
            .unwrap()
            .render(
                "GET /api/v1/orders 200",
                1_795_651_200_500_000_000,
                labels.iter().map(|(k, v)| (*k, *v)),
            )
            .unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn loki_functions() {
        let l = [
            ("method", "get"),
            ("path", "/api/v1/orders"),
            ("ms", "1234"),
        ];
        assert_eq!(
            render("{{ .method | ToUpper }} {{ .path }}", &l),
            "GET /api/v1/orders"
        );
        assert_eq!(render("{{ upper .method }}", &l), "GET");
        assert_eq!(render("{{ __line__ | trunc 3 }}", &l), "GET");
        assert_eq!(
            render(r#"{{ Replace __line__ "GET" "PUT" -1 }}"#, &l),
            "PUT /api/v1/orders 200"
        );
        assert_eq!(
            render(r#"{{ .path | replace "/" ":" }}"#, &l),
            ":api:v1:orders"
        );
        assert_eq!(render(r#"{{ TrimPrefix .path "/api" }}"#, &l), "/v1/orders");
        assert_eq!(
            render(r#"{{ regexReplaceAll "v([0-9])" .path "version$1" }}"#, &l),
            "/api/version1/orders"
        );
        assert_eq!(
            render(
                r#"{{ if hasPrefix "/api" .path }}api{{ else }}other{{ end }}"#,
                &l
            ),
            "api"
        );
        assert_eq!(render("{{ divf .ms 1000 }}s", &l), "1.234s");
        assert_eq!(render("{{ add .ms 1 }}", &l), "1235");
        assert_eq!(
            render(
                "[{{ alignLeft 5 .method }}][{{ alignRight 5 .method }}]",
                &l
            ),
            "[get  ][  get]"
        );
        assert_eq!(
            render(r#"{{ .missing | default "none" }}|{{ .missing }}|"#, &l),
            "none||"
        );
        assert_eq!(
            render("{{ __timestamp__ }} {{ unixEpoch __timestamp__ }}", &l),
            "2026-11-26T00:00:00.5Z 1795651200"
        );
        assert_eq!(
            render(r#"{{ printf "%s=%s" "method" .method }}"#, &l),
            "method=get"
        );
        // Inside quotes, __line__ is text.
        assert_eq!(render(r#"{{ "__line__" }}"#, &l), "__line__");
        assert_eq!(render("{{ b64enc .method | b64dec }}", &l), "get");
    }

    #[test]
    fn errors_say_what() {
        for open in [
            "{{ .a ",
            "{{ ( ",
            r#"{{ "}}" "#,
            "x {{ .b }} {{ $x := 1 ",
            "{{/* x }}",
        ] {
            let e = GoTemplate::parse(open).unwrap_err();
            assert!(e.contains("not closed"), "{open}: {e}");
        }
        assert!(GoTemplate::parse(r#"{{ "a}}b" }} {{/* c }} */}}"#).is_ok());
        let e = GoTemplate::parse("{{ nosuch .a }}").unwrap_err();
        assert!(e.contains("nosuch"), "{e}");
        let e = GoTemplate::parse("{{ div .a 0 }}")
            .unwrap()
            .render("", 0, [("a", "1")].into_iter())
            .unwrap_err();
        assert!(e.contains("division"), "{e}");
    }
}
