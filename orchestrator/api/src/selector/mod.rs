//! Label and field selectors.

pub mod field;
pub mod label;

pub use field::FieldSelector;
pub use label::{LabelSelector, SelectorError};
