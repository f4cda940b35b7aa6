//! Container log files in the CRI format: writing them (`writer`) and reading them back for
//! `kubectl logs` (`reader`).

pub mod reader;
pub mod writer;
