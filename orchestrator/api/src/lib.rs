//! Pure Kubernetes object logic for Skiff: the resource registry, selectors, quantities,
//! patches, defaulting, validation, version conversion and server-side printing.
//!
//! This crate does no IO and needs no runtime: the API server, the CLI and the controllers all
//! build on it (see docs/ARCHITECTURE.md, "skiff-api").

pub mod apply;
pub mod convert;
pub mod defaults;
pub mod intstr;
pub mod patch;
pub mod quantity;
pub mod registry;
pub mod selector;
pub mod table;
pub mod three_way;
pub mod time;
pub mod typed;
pub mod validation;
pub mod yaml;

pub use registry::{Registry, ResourceInfo};
