//! The Outpost agent as a library: the sans-IO supervisor [`core`] and the drivers around it.
//! `main.rs` is only the command line.

#![forbid(unsafe_code)]
// Protocol values are bounded and inline (no heap), so rejections and events are large by
// design; they are the cold path or moved once.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod config;
pub mod core;
pub mod driver;
pub mod runtime;
