//! A recursive-descent parser for the LogQL subset: stream selectors, line filters, `json`,
//! `logfmt`, `regexp`, `pattern`, label filters, `line_format`, range aggregations (with
//! `unwrap`), vector aggregations, number
//! literals, `vector()` and binary operators with PromQL's precedence. Anything else is refused
//! with the column where it starts and what is supported instead.

use super::ast::*;
use super::lexer::{Spanned, Tok, tokenize};

/// Parse a whole query.
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    let mut p = Parser {
        toks: tokenize(input)?,
        pos: 0,
    };
    let expr = p.expr(0)?;
    p.expect_eof()?;
    match expr {
        Node::Log(l) if l.stages.iter().any(|s| matches!(s, Stage::Unwrap(_))) => {
            let col = input
                .find("unwrap")
                .map_or(1, |i| input[..i].chars().count() + 1);
            Err(ParseError {
                col,
                message: "| unwrap is only allowed in range aggregations such as sum_over_time({…} | unwrap x [5m])".into(),
            })
        }
        Node::Log(l) => Ok(Expr::Log(l)),
        Node::Metric(m) => Ok(Expr::Metric(m)),
    }
}

/// Parse a query that must select lines (tail, series, labels with `query=`).
pub fn parse_log(input: &str) -> Result<LogExpr, ParseError> {
    match parse(input)? {
        Expr::Log(l) => Ok(l),
        Expr::Metric(_) => Err(ParseError {
            col: 1,
            message: "a log query ({…} with optional filters) is needed here, not a metric query"
                .into(),
        }),
    }
}

enum Node {
    Log(LogExpr),
    Metric(MetricExpr),
}

struct Parser {
    toks: Vec<Spanned>,
    pos: usize,
}

const AGG_OPS: [(&str, AggOp); 9] = [
    ("sum", AggOp::Sum),
    ("avg", AggOp::Avg),
    ("min", AggOp::Min),
    ("max", AggOp::Max),
    ("count", AggOp::Count),
    ("stddev", AggOp::Stddev),
    ("stdvar", AggOp::Stdvar),
    ("topk", AggOp::Topk),
    ("bottomk", AggOp::Bottomk),
];

const SUPPORTED: &str = "supported: {selector}, |= != |~ !~, | json, | logfmt, | regexp, | pattern, | unpack, | decolorize, label filters, | line_format, | label_format (Go templates with Loki's functions), | drop, | keep, | unwrap, count_over_time, rate, bytes_over_time, bytes_rate, absent_over_time, sum/avg/min/max/first/last/stddev/stdvar/quantile_over_time, sum/avg/min/max/count/stddev/stdvar/topk/bottomk, vector(), numbers and binary operators with on/ignoring and group_left/group_right";

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].0
    }

    fn col(&self) -> usize {
        self.toks[self.pos].1
    }

    fn next(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            col: self.col(),
            message: message.into(),
        })
    }

    fn error_at<T>(&self, col: usize, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            col,
            message: message.into(),
        })
    }

    fn unexpected<T>(&self, wanted: &str) -> Result<T, ParseError> {
        self.error(format!(
            "syntax error: unexpected {}, expecting {wanted}",
            self.peek().describe()
        ))
    }

    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }

    fn is_ident(&self, name: &str) -> bool {
        matches!(self.peek(), Tok::Ident(i) if i == name)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if self.is_op(op) {
            self.next();
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), ParseError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            self.unexpected(&format!("{op:?}"))
        }
    }

    fn expect_eof(&self) -> Result<(), ParseError> {
        match self.peek() {
            Tok::Eof => Ok(()),
            _ => self.unexpected("end of input"),
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                self.next();
                Ok(s)
            }
            _ => self.unexpected("IDENTIFIER"),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Str(s) => {
                self.next();
                Ok(s)
            }
            _ => self.unexpected("STRING"),
        }
    }

    fn duration(&mut self) -> Result<i64, ParseError> {
        match self.peek().clone() {
            Tok::Duration(d) => {
                self.next();
                Ok(d)
            }
            _ => self.unexpected("a duration such as 5m"),
        }
    }

    /// The binary operator at the cursor, with its precedence (higher binds tighter) and
    /// whether it is right-associative.
    fn binop(&self) -> Option<(BinOp, u8, bool)> {
        let op = match self.peek() {
            Tok::Op(o) => match *o {
                "+" => (BinOp::Add, 4, false),
                "-" => (BinOp::Sub, 4, false),
                "*" => (BinOp::Mul, 5, false),
                "/" => (BinOp::Div, 5, false),
                "%" => (BinOp::Mod, 5, false),
                "^" => (BinOp::Pow, 6, true),
                "==" => (BinOp::Eq, 3, false),
                "!=" => (BinOp::Ne, 3, false),
                ">" => (BinOp::Gt, 3, false),
                ">=" => (BinOp::Ge, 3, false),
                "<" => (BinOp::Lt, 3, false),
                "<=" => (BinOp::Le, 3, false),
                _ => return None,
            },
            Tok::Ident(i) => match i.as_str() {
                "and" => (BinOp::And, 2, false),
                "unless" => (BinOp::Unless, 2, false),
                "or" => (BinOp::Or, 1, false),
                _ => return None,
            },
            _ => return None,
        };
        Some(op)
    }

    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        let mut lhs = self.unary()?;
        while let Some((op, prec, right)) = self.binop() {
            if prec < min_prec {
                break;
            }
            let col = self.col();
            self.next();
            let return_bool = self.is_ident("bool") && {
                self.next();
                true
            };
            let matching = self.vector_matching(op)?;
            let rhs = self.expr(if right { prec } else { prec + 1 })?;
            let (Node::Metric(l), Node::Metric(r)) = (lhs, rhs) else {
                return Err(ParseError {
                    col,
                    message: "binary operators need metric queries on both sides, not log queries"
                        .into(),
                });
            };
            lhs = Node::Metric(MetricExpr::Binary {
                op,
                return_bool,
                matching,
                lhs: Box::new(l),
                rhs: Box::new(r),
            });
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        if self.eat_op("-") {
            return match self.unary()? {
                Node::Metric(MetricExpr::Number(n)) => Ok(Node::Metric(MetricExpr::Number(-n))),
                Node::Metric(m) => Ok(Node::Metric(MetricExpr::Binary {
                    op: BinOp::Mul,
                    return_bool: false,
                    matching: None,
                    lhs: Box::new(MetricExpr::Number(-1.0)),
                    rhs: Box::new(m),
                })),
                Node::Log(_) => self.error("a log query cannot be negated"),
            };
        }
        if self.eat_op("+") {
            return self.unary();
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        match self.peek().clone() {
            Tok::Op("(") => {
                self.next();
                let inner = self.expr(0)?;
                self.expect_op(")")?;
                Ok(inner)
            }
            Tok::Num(n) => {
                self.next();
                Ok(Node::Metric(MetricExpr::Number(n)))
            }
            Tok::Op("{") => Ok(Node::Log(self.log_expr()?)),
            Tok::Ident(name) => {
                if let Some(op) = RangeOp::ALL.iter().find(|op| op.name() == name) {
                    self.next();
                    return self.range_agg(*op).map(Node::Metric);
                }
                if let Some((_, op)) = AGG_OPS.iter().find(|(n, _)| *n == name) {
                    self.next();
                    return self.vector_agg(*op).map(Node::Metric);
                }
                if name == "vector" {
                    self.next();
                    self.expect_op("(")?;
                    let n = self.number()?;
                    self.expect_op(")")?;
                    return Ok(Node::Metric(MetricExpr::Vector(n)));
                }
                self.error(format!(
                    "syntax error: unexpected IDENTIFIER {name:?} ({SUPPORTED})"
                ))
            }
            _ => self.unexpected("a stream selector {…}, a function or a number"),
        }
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        let neg = self.eat_op("-");
        match self.peek().clone() {
            Tok::Num(n) => {
                self.next();
                Ok(if neg { -n } else { n })
            }
            _ => self.unexpected("NUMBER"),
        }
    }

    fn range_agg(&mut self, op: RangeOp) -> Result<MetricExpr, ParseError> {
        let col = self.col();
        self.expect_op("(")?;
        let param = if op == RangeOp::QuantileOverTime {
            let q = self.number()?;
            self.expect_op(",")?;
            Some(q)
        } else {
            None
        };
        if !self.is_op("{") {
            return self.unexpected("a stream selector {…}");
        }
        let mut log = self.log_expr()?;
        self.expect_op("[")?;
        let range = self.duration()?;
        if range <= 0 {
            return self.error("the range must be positive");
        }
        self.expect_op("]")?;
        // Loki also takes the pipeline after the range: count_over_time({a="b"}[5m] |= "x").
        if !self.is_op(")") && !self.is_ident("offset") {
            log.stages.extend(self.stages()?);
        }
        let mut offset = 0;
        if self.is_ident("offset") {
            self.next();
            offset = self.duration()?;
        }
        self.expect_op(")")?;
        // `| unwrap` is a stage of the range's pipeline; it names the sampled label.
        let mut unwrap = None;
        let mut stages = Vec::new();
        for stage in std::mem::take(&mut log.stages) {
            match stage {
                Stage::Unwrap(u) if unwrap.is_none() => unwrap = Some(u),
                Stage::Unwrap(_) => return self.error_at(col, "only one | unwrap is allowed"),
                s => stages.push(s),
            }
        }
        log.stages = stages;
        let name = op.name();
        match (&unwrap, op.needs_unwrap()) {
            (None, true) => {
                return self.error_at(
                    col,
                    format!("invalid aggregation {name} without unwrap: add | unwrap <label>"),
                );
            }
            (Some(_), false) if op != RangeOp::Rate => {
                return self.error_at(col, format!("invalid aggregation {name} with unwrap"));
            }
            _ => {}
        }
        // Loki takes `by`/`without` after an unwrapped range aggregation.
        let grouping = if unwrap.is_some() {
            self.grouping()?
        } else {
            None
        };
        Ok(MetricExpr::Range {
            op,
            log,
            range,
            offset,
            unwrap,
            param,
            grouping,
        })
    }

    /// `(a, b)`.
    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect_op("(")?;
        let mut labels = Vec::new();
        while !self.is_op(")") {
            labels.push(self.ident()?);
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op(")")?;
        Ok(labels)
    }

    /// `on (…)` / `ignoring (…)` and `group_left [(…)]` / `group_right [(…)]` after an operator.
    fn vector_matching(&mut self, op: BinOp) -> Result<Option<VectorMatching>, ParseError> {
        let on = if self.is_ident("on") {
            true
        } else if self.is_ident("ignoring") {
            false
        } else {
            return Ok(None);
        };
        self.next();
        let labels = self.label_list()?;
        let group = if self.is_ident("group_left") || self.is_ident("group_right") {
            if op.is_set() {
                return self.error("no grouping allowed for and, or, unless operations");
            }
            let left = self.is_ident("group_left");
            self.next();
            let extra = if self.is_op("(") {
                self.label_list()?
            } else {
                Vec::new()
            };
            if on && let Some(both) = extra.iter().find(|l| labels.contains(l)) {
                return self.error(format!(
                    "label {both:?} must not occur in on() and in the group clause"
                ));
            }
            Some(if left {
                Group::Left(extra)
            } else {
                Group::Right(extra)
            })
        } else {
            None
        };
        Ok(Some(VectorMatching { on, labels, group }))
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = if self.is_ident("by") {
            false
        } else if self.is_ident("without") {
            true
        } else {
            return Ok(None);
        };
        self.next();
        let labels = self.label_list()?;
        Ok(Some(if without {
            Grouping::Without(labels)
        } else {
            Grouping::By(labels)
        }))
    }

    fn vector_agg(&mut self, op: AggOp) -> Result<MetricExpr, ParseError> {
        let mut grouping = self.grouping()?;
        self.expect_op("(")?;
        let param = if matches!(op, AggOp::Topk | AggOp::Bottomk) {
            let k = self.number()?;
            self.expect_op(",")?;
            Some(k)
        } else {
            None
        };
        let col = self.col();
        let inner = match self.expr(0)? {
            Node::Metric(m) => m,
            Node::Log(_) => {
                return Err(ParseError {
                    col,
                    message: "aggregations take a metric query such as count_over_time({…}[5m]), not a log query".into(),
                });
            }
        };
        self.expect_op(")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        Ok(MetricExpr::Agg {
            op,
            param,
            grouping,
            inner: Box::new(inner),
        })
    }

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let start = self.col();
        self.expect_op("{")?;
        let mut matchers = Vec::new();
        while !self.is_op("}") {
            matchers.push(self.matcher()?);
            if !self.eat_op(",") {
                break;
            }
        }
        self.expect_op("}")?;
        if matchers.is_empty() {
            return Err(ParseError {
                col: start,
                message:
                    "queries require at least one label matcher, such as {namespace=\"default\"}"
                        .into(),
            });
        }
        if matchers.iter().all(|m| m.matches(Some(""))) {
            return Err(ParseError {
                col: start,
                message: "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will".into(),
            });
        }
        let stages = self.stages()?;
        Ok(LogExpr { matchers, stages })
    }

    fn matcher(&mut self) -> Result<LabelMatcher, ParseError> {
        // A quoted name reaches pod labels such as "app.kubernetes.io/name", as Prometheus 3
        // allows in selectors.
        let name = match self.peek().clone() {
            Tok::Str(s) if !s.is_empty() => {
                self.next();
                s
            }
            _ => self.ident()?,
        };
        let op = match self.next() {
            Tok::Op("=") => MatchOp::Eq,
            Tok::Op("!=") => MatchOp::Ne,
            Tok::Op("=~") => MatchOp::Re,
            Tok::Op("!~") => MatchOp::NotRe,
            _ => {
                self.pos -= 1;
                return self.unexpected("=, !=, =~ or !~");
            }
        };
        let col = self.col();
        let value = self.string()?;
        let regex = match op {
            MatchOp::Re | MatchOp::NotRe => {
                Some(anchored(&value).map_err(|m| ParseError { col, message: m })?)
            }
            _ => None,
        };
        Ok(LabelMatcher {
            name,
            op,
            value,
            regex,
        })
    }

    fn stages(&mut self) -> Result<Vec<Stage>, ParseError> {
        let mut stages = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Op("|=") => LineOp::Contains,
                Tok::Op("!=") => LineOp::NotContains,
                Tok::Op("|~") => LineOp::Regex,
                Tok::Op("!~") => LineOp::NotRegex,
                Tok::Op("|") => {
                    self.next();
                    stages.push(self.pipe_stage()?);
                    continue;
                }
                _ => return Ok(stages),
            };
            self.next();
            let mut values = Vec::new();
            let mut regexes = Vec::new();
            loop {
                let col = self.col();
                let v = self.string()?;
                if matches!(op, LineOp::Regex | LineOp::NotRegex) {
                    regexes.push(regex::Regex::new(&v).map_err(|e| ParseError {
                        col,
                        message: format!("invalid regular expression {v:?}: {e}"),
                    })?);
                }
                values.push(v);
                // `|= "a" or "b"`
                if self.is_ident("or") && matches!(self.peek_at(1), Tok::Str(_)) {
                    self.next();
                    continue;
                }
                break;
            }
            stages.push(Stage::Line(LineFilter {
                op,
                values,
                regexes,
            }));
        }
    }

    fn pipe_stage(&mut self) -> Result<Stage, ParseError> {
        let Tok::Ident(name) = self.peek().clone() else {
            return self.unexpected("a parser (json, logfmt), line_format or a label filter");
        };
        match name.as_str() {
            "json" | "logfmt" => {
                self.next();
                if self.is_op("-") {
                    return self.error(format!("| {name} flags are not supported"));
                }
                // Parameters: `label` or `label="expression"`, comma separated.
                let mut params = Vec::new();
                while matches!(self.peek(), Tok::Ident(_))
                    && !self.is_ident("or")
                    && !self.is_ident("and")
                {
                    let label = self.ident()?;
                    let col = self.col();
                    let expr = if self.eat_op("=") {
                        self.string()?
                    } else {
                        label.clone()
                    };
                    params.push((label, expr, col));
                    if !self.eat_op(",") {
                        break;
                    }
                }
                if name == "logfmt" {
                    return Ok(Stage::Logfmt(
                        params.into_iter().map(|(l, e, _)| (l, e)).collect(),
                    ));
                }
                let mut paths = Vec::new();
                for (label, expr, col) in params {
                    let path = json_path(&expr).map_err(|message| ParseError { col, message })?;
                    paths.push((label, path));
                }
                Ok(Stage::Json(paths))
            }
            "line_format" => {
                self.next();
                let col = self.col();
                let t = self.string()?;
                Ok(Stage::LineFormat(
                    template(&t).map_err(|m| ParseError { col, message: m })?,
                ))
            }
            "drop" | "keep" => {
                self.next();
                let mut picks = Vec::new();
                loop {
                    let is_matcher = matches!(self.peek_at(1), Tok::Op("=" | "!=" | "=~" | "!~"));
                    picks.push(if is_matcher {
                        let m = self.matcher()?;
                        LabelPick {
                            name: m.name.clone(),
                            matcher: Some(m),
                        }
                    } else {
                        LabelPick {
                            name: self.ident()?,
                            matcher: None,
                        }
                    });
                    if !self.eat_op(",") {
                        break;
                    }
                }
                Ok(if name == "drop" {
                    Stage::Drop(picks)
                } else {
                    Stage::Keep(picks)
                })
            }
            "label_format" => {
                self.next();
                let mut assignments = Vec::new();
                loop {
                    let dst = self.ident()?;
                    self.expect_op("=")?;
                    let col = self.col();
                    let value = match self.next() {
                        Tok::Ident(src) => LabelValue::Rename(src),
                        Tok::Str(t) => LabelValue::Template(
                            template(&t).map_err(|m| ParseError { col, message: m })?,
                        ),
                        _ => {
                            self.pos -= 1;
                            return self.unexpected("a label name or a template string");
                        }
                    };
                    assignments.push((dst, value));
                    if !self.eat_op(",") {
                        break;
                    }
                }
                Ok(Stage::LabelFormat(assignments))
            }
            "regexp" => {
                self.next();
                let col = self.col();
                let re = self.string()?;
                let compiled = regex::Regex::new(&re).map_err(|e| ParseError {
                    col,
                    message: format!("invalid regular expression {re:?}: {e}"),
                })?;
                if compiled.capture_names().flatten().next().is_none() {
                    return Err(ParseError {
                        col,
                        message: format!("| regexp {re:?} has no named group (?P<name>…)"),
                    });
                }
                Ok(Stage::Regexp(compiled))
            }
            "pattern" => {
                self.next();
                let col = self.col();
                let text = self.string()?;
                Ok(Stage::Pattern(
                    pattern(&text).map_err(|m| ParseError { col, message: m })?,
                ))
            }
            "unwrap" => {
                self.next();
                let conversion = match self.peek() {
                    Tok::Ident(f) if matches!(self.peek_at(1), Tok::Op("(")) => {
                        let conversion = match f.as_str() {
                            "duration" | "duration_seconds" => Conversion::Duration,
                            "bytes" => Conversion::Bytes,
                            other => {
                                return self.error(format!(
                                    "unwrap conversion {other}() is not known (duration, duration_seconds, bytes)"
                                ));
                            }
                        };
                        self.next();
                        self.next();
                        Some(conversion)
                    }
                    _ => None,
                };
                let label = self.ident()?;
                if conversion.is_some() {
                    self.expect_op(")")?;
                }
                Ok(Stage::Unwrap(Unwrap {
                    label,
                    conversion: conversion.unwrap_or(Conversion::Number),
                }))
            }
            "decolorize" => {
                self.next();
                Ok(Stage::Decolorize)
            }
            "unpack" => {
                self.next();
                Ok(Stage::Unpack)
            }
            "distinct" => self.error(format!(
                "| {name} is not supported by skiff-search yet ({SUPPORTED})"
            )),
            _ => Ok(Stage::Label(self.label_filter_or()?)),
        }
    }

    fn label_filter_or(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_and()?;
        while self.is_ident("or") {
            self.next();
            let rhs = self.label_filter_and()?;
            lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn label_filter_and(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_atom()?;
        loop {
            if self.is_ident("and") || self.is_op(",") {
                self.next();
            } else {
                break;
            }
            let rhs = self.label_filter_atom()?;
            lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn label_filter_atom(&mut self) -> Result<LabelFilter, ParseError> {
        if self.eat_op("(") {
            let inner = self.label_filter_or()?;
            self.expect_op(")")?;
            return Ok(inner);
        }
        let name = self.ident()?;
        let op = match self.next() {
            Tok::Op("=") => CmpOp::Eq,
            Tok::Op("==") => CmpOp::Eq,
            Tok::Op("!=") => CmpOp::Ne,
            Tok::Op("=~") => CmpOp::Re,
            Tok::Op("!~") => CmpOp::NotRe,
            Tok::Op(">") => CmpOp::Gt,
            Tok::Op(">=") => CmpOp::Ge,
            Tok::Op("<") => CmpOp::Lt,
            Tok::Op("<=") => CmpOp::Le,
            _ => {
                self.pos -= 1;
                return self.unexpected("a comparison (=, !=, =~, !~, ==, >, >=, <, <=)");
            }
        };
        let col = self.col();
        let value = match self.next() {
            Tok::Str(s) => FilterValue::Str(s),
            Tok::Num(n) => FilterValue::Num(n),
            Tok::Duration(ns) => FilterValue::Num(ns as f64 / 1e9),
            Tok::Bytes(b) => FilterValue::Num(b),
            Tok::Op("-") => match self.next() {
                Tok::Num(n) => FilterValue::Num(-n),
                _ => {
                    self.pos -= 1;
                    return self.unexpected("NUMBER");
                }
            },
            _ => {
                self.pos -= 1;
                return self.unexpected("STRING, NUMBER, DURATION or BYTES");
            }
        };
        let bad = |message: String| Err(ParseError { col, message });
        let regex = match (&value, op) {
            (FilterValue::Str(s), CmpOp::Re | CmpOp::NotRe) => {
                Some(anchored(s).map_err(|message| ParseError { col, message })?)
            }
            (FilterValue::Num(_), CmpOp::Re | CmpOp::NotRe) => {
                return bad("=~ and !~ take a string".into());
            }
            (FilterValue::Str(_), CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le) => {
                return bad(
                    "> >= < <= compare numbers, durations or byte sizes, not strings".into(),
                );
            }
            _ => None,
        };
        Ok(LabelFilter::Cmp {
            name,
            op,
            value,
            regex,
        })
    }
}

/// A label regular expression, anchored at both ends as Prometheus and Loki do.
/// A `pattern` expression: literals and `<name>`/`<_>` captures, at least one named, no two
/// captures side by side (nothing would tell where one ends).
fn pattern(text: &str) -> Result<Vec<PatternPart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let capture = rest.strip_prefix('<').and_then(|r| {
            let end = r.find('>')?;
            let name = &r[..end];
            let valid = name == "_"
                || (!name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit()));
            valid.then_some((name, &r[end + 1..]))
        });
        match capture {
            Some((name, after)) => {
                if matches!(parts.last(), Some(PatternPart::Capture(_))) {
                    return Err(format!(
                        "pattern {text:?}: captures must be separated by literal text"
                    ));
                }
                parts.push(PatternPart::Capture((name != "_").then(|| name.to_owned())));
                rest = after;
            }
            None => {
                // Literal text up to the next thing that looks like a capture.
                let next = rest[1..].find('<').map_or(rest.len(), |i| i + 1);
                match parts.last_mut() {
                    Some(PatternPart::Literal(l)) => l.push_str(&rest[..next]),
                    _ => parts.push(PatternPart::Literal(rest[..next].to_owned())),
                }
                rest = &rest[next..];
            }
        }
    }
    if !parts
        .iter()
        .any(|p| matches!(p, PatternPart::Capture(Some(_))))
    {
        return Err(format!("pattern {text:?} has no named capture <name>"));
    }
    Ok(parts)
}

fn anchored(re: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| format!("invalid regular expression {re:?}: {e}"))
}

/// A `| json` parameter's expression: `a.b`, `a[0]`, `a["key with dots"]`, `["a"].b`.
fn json_path(expr: &str) -> Result<Vec<JsonStep>, String> {
    let bad = |why: &str| format!("| json expression {expr:?}: {why}");
    let mut steps = Vec::new();
    let mut rest = expr.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']').ok_or_else(|| bad("unclosed ["))?;
            let inside = r[..close].trim();
            if let Some(q) = inside.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
                steps.push(JsonStep::Key(q.replace("\\\"", "\"")));
            } else {
                let i = inside
                    .parse()
                    .map_err(|_| bad("expected an index or a quoted key in []"))?;
                steps.push(JsonStep::Index(i));
            }
            rest = &r[close + 1..];
        } else {
            let rest_key = rest.strip_prefix('.').unwrap_or(rest);
            let end = rest_key.find(['.', '[']).unwrap_or(rest_key.len());
            if end == 0 {
                return Err(bad("empty key"));
            }
            steps.push(JsonStep::Key(rest_key[..end].to_owned()));
            rest = &rest_key[end..];
        }
        if rest.starts_with('.') && rest.len() == 1 {
            return Err(bad("ends with ."));
        }
    }
    if steps.is_empty() {
        return Err(bad("empty"));
    }
    Ok(steps)
}

/// A template: label reads and `{{__line__}}` as parts rendered directly, anything more (a
/// function, a pipeline, a condition) by Go's text/template.
fn template(text: &str) -> Result<Vec<TemplatePart>, String> {
    simple_template(text)
        .or_else(|_| super::template::GoTemplate::parse(text).map(|t| vec![TemplatePart::Go(t)]))
}

/// The `{{.label}}` / `{{__line__}}` subset of Go templates.
fn simple_template(text: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(TemplatePart::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("line_format {text:?}: unclosed {{{{"))?;
        let action = after[..close]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        if action == "__line__" {
            parts.push(TemplatePart::Line);
        } else if let Some(label) = action
            .strip_prefix('.')
            .filter(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            parts.push(TemplatePart::Label(label.to_owned()));
        } else {
            return Err(format!(
                "line_format: {{{{{action}}}}} is not supported (only {{{{.label}}}} and {{{{__line__}}}})"
            ));
        }
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest.to_owned()));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(q: &str) -> MetricExpr {
        match parse(q).unwrap_or_else(|e| panic!("{q}: {e}")) {
            Expr::Metric(m) => m,
            Expr::Log(_) => panic!("{q} is a log query"),
        }
    }

    #[test]
    fn selectors_and_stages() {
        let Expr::Log(l) = parse(
            r#"{namespace="default", app=~"web|api", pod!="x"} |= "error" or "fatal" != "health" |~ `time(out)?` | json | status >= 500 and method="GET", latency > 250ms | line_format "{{.method}} {{ .path }} {{__line__}}""#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(l.matchers.len(), 3);
        let Expr::Log(q) = parse(r#"{"app.kubernetes.io/name"="web"}"#).unwrap() else {
            panic!()
        };
        assert_eq!(q.matchers[0].name, "app.kubernetes.io/name");
        assert!(l.matchers[1].matches(Some("api")));
        assert!(!l.matchers[1].matches(Some("apix")));
        assert_eq!(l.stages.len(), 6);
        let Stage::Line(f) = &l.stages[0] else {
            panic!()
        };
        assert_eq!(f.values, vec!["error", "fatal"]);
        assert!(matches!(l.stages[3], Stage::Json(_)));
        let Stage::LineFormat(t) = &l.stages[5] else {
            panic!()
        };
        assert_eq!(
            t,
            &vec![
                TemplatePart::Label("method".into()),
                TemplatePart::Text(" ".into()),
                TemplatePart::Label("path".into()),
                TemplatePart::Text(" ".into()),
                TemplatePart::Line
            ]
        );
    }

    #[test]
    fn metrics_and_precedence() {
        let m = metric("vector(1)+vector(1)");
        assert!(matches!(m, MetricExpr::Binary { op: BinOp::Add, .. }));
        let m = metric(r#"sum by (level) (count_over_time({app="a"}[1m])) * 2 + 1"#);
        let MetricExpr::Binary {
            op: BinOp::Add,
            lhs,
            ..
        } = m
        else {
            panic!()
        };
        assert!(matches!(*lhs, MetricExpr::Binary { op: BinOp::Mul, .. }));
        let m = metric(r#"topk(3, sum(rate({app="a"} |= "x" [5m] offset 1h)) without (pod))"#);
        let MetricExpr::Agg {
            op: AggOp::Topk,
            param: Some(k),
            inner,
            ..
        } = m
        else {
            panic!()
        };
        assert_eq!(k, 3.0);
        let MetricExpr::Agg {
            grouping, inner, ..
        } = *inner
        else {
            panic!()
        };
        assert_eq!(grouping, Some(Grouping::Without(vec!["pod".into()])));
        let MetricExpr::Range {
            op: RangeOp::Rate,
            range,
            offset,
            log,
            ..
        } = *inner
        else {
            panic!()
        };
        assert_eq!((range, offset), (300_000_000_000, 3_600_000_000_000));
        assert_eq!(log.stages.len(), 1);
        assert!(matches!(
            metric("2 ^ 3 ^ 2"),
            MetricExpr::Binary { op: BinOp::Pow, .. }
        ));
        assert!(matches!(metric("-1"), MetricExpr::Number(n) if n == -1.0));
    }

    #[test]
    fn unwrapped_range_aggregations() {
        let MetricExpr::Range {
            op,
            log,
            unwrap,
            param,
            grouping,
            ..
        } = metric(
            r#"quantile_over_time(0.99, {app="a"} | json | unwrap duration(took) | took > 0 [5m]) by (pod)"#,
        )
        else {
            panic!()
        };
        assert_eq!(op, RangeOp::QuantileOverTime);
        assert_eq!(param, Some(0.99));
        assert_eq!(
            unwrap,
            Some(Unwrap {
                label: "took".into(),
                conversion: Conversion::Duration
            })
        );
        assert_eq!(grouping, Some(Grouping::By(vec!["pod".into()])));
        // The unwrap stage is taken out; the filter after it stays.
        assert_eq!(log.stages.len(), 2);
        assert!(matches!(
            metric(r#"rate({app="a"} | logfmt | unwrap bytes(size) [1m])"#),
            MetricExpr::Range {
                op: RangeOp::Rate,
                unwrap: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn vector_matching() {
        let MetricExpr::Binary { matching, .. } = metric(
            r#"sum by (pod) (rate({app="a"}[1m])) * on (pod) group_left (node) sum by (pod, node) (rate({app="b"}[1m]))"#,
        ) else {
            panic!()
        };
        assert_eq!(
            matching,
            Some(VectorMatching {
                on: true,
                labels: vec!["pod".into()],
                group: Some(Group::Left(vec!["node".into()])),
            })
        );
        let MetricExpr::Binary { matching, .. } =
            metric(r#"rate({app="a"}[1m]) > bool ignoring(level) rate({app="b"}[1m])"#)
        else {
            panic!()
        };
        assert_eq!(matching.map(|m| (m.on, m.group)), Some((false, None)));
        for q in [
            r#"rate({app="a"}[1m]) and on(pod) group_left rate({app="b"}[1m])"#,
            r#"rate({app="a"}[1m]) * on(pod) group_left(pod) rate({app="b"}[1m])"#,
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
    }

    #[test]
    fn errors_say_where() {
        for (q, col, needle) in [
            (r#"{app="a""#, 9, "expecting"),
            (r#"{app=~".*"}"#, 1, "empty-compatible"),
            ("{}", 1, "at least one"),
            (r#"{app="a"} | distinct pod"#, 13, "not supported"),
            (r#"{app="a"} | pattern "<a><b>""#, 21, "separated"),
            (r#"{app="a"} | pattern "<_> x""#, 21, "no named capture"),
            (r#"{app="a"} | regexp `(\w+)`"#, 20, "no named group"),
            (r#"sum_over_time({app="a"}[1m])"#, 14, "without unwrap"),
            (
                r#"count_over_time({app="a"} | unwrap x [1m])"#,
                16,
                "with unwrap",
            ),
            (
                r#"sum_over_time({app="a"} | unwrap f(x) [1m])"#,
                34,
                "not known",
            ),
            (r#"{app="a"} |~ "(""#, 14, "regular expression"),
            (r#"count_over_time({app="a"})"#, 26, "\"[\""),
            (r#"{app="a"} + 1"#, 11, "metric queries on both sides"),
            (r#"{app="a"} | status > "x""#, 22, "not strings"),
        ] {
            let e = parse(q).expect_err(q);
            assert_eq!(e.col, col, "{q}: {e}");
            assert!(e.to_string().contains(needle), "{q}: {e}");
            assert!(e.to_string().starts_with("parse error at line 1, col "));
        }
    }
}
