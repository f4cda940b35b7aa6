//! The LogQL subset skiff-search understands, as a tree.

use std::fmt;

/// A label matcher's operator, as in a stream selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// `name op "value"` inside `{…}`.
#[derive(Clone, Debug)]
pub struct LabelMatcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored regular expression of `=~` and `!~`.
    pub regex: Option<regex::Regex>,
}

impl LabelMatcher {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::NotRe => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// A line filter's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineOp {
    Contains,
    NotContains,
    Regex,
    NotRegex,
}

/// `|= "a" or "b"`: the line must match one of the alternatives (for `!=` and `!~`, none).
#[derive(Clone, Debug)]
pub struct LineFilter {
    pub op: LineOp,
    pub values: Vec<String>,
    /// Unanchored regular expressions of `|~` and `!~`, one per value.
    pub regexes: Vec<regex::Regex>,
}

/// What a label filter compares against.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    Str(String),
    /// A number; durations are seconds and byte sizes bytes, as Loki compares them.
    Num(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Re,
    NotRe,
    Gt,
    Ge,
    Lt,
    Le,
}

/// `| status >= 500 and method = "GET"`.
#[derive(Clone, Debug)]
pub enum LabelFilter {
    Cmp {
        name: String,
        op: CmpOp,
        value: FilterValue,
        regex: Option<regex::Regex>,
    },
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
}

/// A piece of a `line_format` template.
#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Label(String),
    Line,
    /// A template with more than label reads (functions, pipelines, conditions): all of it,
    /// run by Go's text/template.
    Go(super::template::GoTemplate),
}

/// One stage of a log pipeline.
#[derive(Clone, Debug)]
pub enum Stage {
    Line(LineFilter),
    /// `| json` (every scalar), or `| json status, ua="request.headers[\"User-Agent\"]"`
    /// (only these labels, each from its path).
    Json(Vec<(String, Vec<JsonStep>)>),
    /// `| logfmt`, or `| logfmt host, ip="client_ip"` (only these labels, from those keys).
    Logfmt(Vec<(String, String)>),
    Label(LabelFilter),
    LineFormat(Vec<TemplatePart>),
    /// `| drop a, b="v"`: remove the labels (a matcher only where it matches).
    Drop(Vec<LabelPick>),
    /// `| keep a, b="v"`: remove every other label.
    Keep(Vec<LabelPick>),
    /// `| label_format dst=src, dst="{{.a}}-{{.b}}"`: rename or set labels.
    LabelFormat(Vec<(String, LabelValue)>),
    /// `| regexp "(?P<name>…)"`: named groups of the first match become labels.
    Regexp(regex::Regex),
    /// `| pattern "<ip> - <_> \"<method> <uri>\""`: captures become labels when the whole
    /// pattern matches from the start of the line.
    Pattern(Vec<PatternPart>),
    /// `| unwrap name`: the label whose value is a range aggregation's sample. Only in range
    /// aggregations; taken out of the stages by the parser.
    Unwrap(Unwrap),
    /// `| decolorize`: ANSI colour sequences removed from the line.
    Decolorize,
    /// `| unpack`: a line packed by promtail's `pack` stage — a JSON object whose `_entry` is
    /// the original line and whose other string keys become labels.
    Unpack,
}

/// One step of a `| json` parameter's path: a key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonStep {
    Key(String),
    Index(usize),
}

/// A piece of a `pattern` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternPart {
    Literal(String),
    /// A named capture; `None` for `<_>`.
    Capture(Option<String>),
}

/// `| unwrap [duration|bytes](label)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwrap {
    pub label: String,
    pub conversion: Conversion,
}

/// How an unwrapped label's value becomes a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// A plain number.
    Number,
    /// A Go duration (`1.5s`, `250ms`, `1h2m`) in seconds.
    Duration,
    /// A byte size (`1.5KB`, `10MiB`, `512`) in bytes.
    Bytes,
}

/// A label named by `drop`/`keep`, optionally with a matcher its value must satisfy.
#[derive(Clone, Debug)]
pub struct LabelPick {
    pub name: String,
    pub matcher: Option<LabelMatcher>,
}

impl LabelPick {
    pub fn picks(&self, name: &str, value: &str) -> bool {
        name == self.name && self.matcher.as_ref().is_none_or(|m| m.matches(Some(value)))
    }
}

/// The right side of a `label_format` assignment.
#[derive(Clone, Debug)]
pub enum LabelValue {
    /// `dst=src`: the value of `src`, which is removed.
    Rename(String),
    /// `dst="template"`.
    Template(Vec<TemplatePart>),
}

/// `{selector} | stages…`
#[derive(Clone, Debug)]
pub struct LogExpr {
    pub matchers: Vec<LabelMatcher>,
    pub stages: Vec<Stage>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeOp {
    CountOverTime,
    Rate,
    BytesOverTime,
    BytesRate,
    AbsentOverTime,
    SumOverTime,
    AvgOverTime,
    MinOverTime,
    MaxOverTime,
    FirstOverTime,
    LastOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
}

impl RangeOp {
    pub const ALL: [RangeOp; 14] = [
        RangeOp::CountOverTime,
        RangeOp::Rate,
        RangeOp::BytesOverTime,
        RangeOp::BytesRate,
        RangeOp::AbsentOverTime,
        RangeOp::SumOverTime,
        RangeOp::AvgOverTime,
        RangeOp::MinOverTime,
        RangeOp::MaxOverTime,
        RangeOp::FirstOverTime,
        RangeOp::LastOverTime,
        RangeOp::StddevOverTime,
        RangeOp::StdvarOverTime,
        RangeOp::QuantileOverTime,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::AbsentOverTime => "absent_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
        }
    }

    /// Whether the op aggregates unwrapped values (and so needs `| unwrap`); `rate` takes one
    /// optionally (the per-second sum).
    pub fn needs_unwrap(self) -> bool {
        !matches!(
            self,
            RangeOp::CountOverTime
                | RangeOp::Rate
                | RangeOp::BytesOverTime
                | RangeOp::BytesRate
                | RangeOp::AbsentOverTime
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Stddev,
    Stdvar,
    Topk,
    Bottomk,
}

/// `by (a, b)` or `without (a, b)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Ge | BinOp::Lt | BinOp::Le
        )
    }

    pub fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }
}

/// How the series of the two sides of a binary operation pair up: on the listed labels only
/// (`on`), or on all but them (`ignoring`); one-to-one unless `group_left`/`group_right` makes
/// the left (right) side the "many" side, copying the listed labels from the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VectorMatching {
    pub on: bool,
    pub labels: Vec<String>,
    pub group: Option<Group>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    Left(Vec<String>),
    Right(Vec<String>),
}

/// A metric query.
#[derive(Clone, Debug)]
pub enum MetricExpr {
    Range {
        op: RangeOp,
        log: LogExpr,
        /// ns
        range: i64,
        /// ns
        offset: i64,
        /// The sampled label (`| unwrap`), for the `*_over_time` ops and `rate`.
        unwrap: Option<Unwrap>,
        /// φ of `quantile_over_time`.
        param: Option<f64>,
        /// `… by (a)` after an unwrapped range aggregation: samples of a group are aggregated
        /// together.
        grouping: Option<Grouping>,
    },
    Agg {
        op: AggOp,
        param: Option<f64>,
        grouping: Option<Grouping>,
        inner: Box<MetricExpr>,
    },
    Binary {
        op: BinOp,
        return_bool: bool,
        /// `on(…)`/`ignoring(…)`, `group_left`/`group_right`; `None` matches identical labels.
        matching: Option<VectorMatching>,
        lhs: Box<MetricExpr>,
        rhs: Box<MetricExpr>,
    },
    Number(f64),
    Vector(f64),
}

/// A whole query: lines or numbers.
#[derive(Clone, Debug)]
pub enum Expr {
    Log(LogExpr),
    Metric(MetricExpr),
}

/// A parse error, worded like Loki's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based column (characters).
    pub col: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "parse error at line 1, col {}: {}",
            self.col, self.message
        )
    }
}

impl std::error::Error for ParseError {}
