//! LogQL, the subset Grafana's Loki data source, logcli and people use: parsed by hand (the
//! maintained Rust LogQL parsers are AGPL), evaluated over the day indexes. Selectors and the
//! words of line filters become index queries; everything else runs on the lines found.

pub mod ast;
pub mod eval;
pub mod lexer;
pub mod lines;
mod matching;
pub mod parser;
pub mod template;

pub use ast::{Expr, LogExpr, MetricExpr, ParseError};
pub use parser::{parse, parse_log};
