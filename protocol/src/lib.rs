//! The wire protocol between `outpost-agent` and `outpost-bridge`.
//!
//! Three parts, each in its own module:
//! - [`messages`]: what the agent and the bridge say to each other (plain Rust types, bounded
//!   by [`heapless`] so an over-long field is an error, never an allocation);
//! - [`topics`]: where each message travels on MQTT (`outpost/v1/agents/{agent_id}/...`), with its
//!   QoS and retain flag;
//! - [`codec`]: the one module that knows the bytes (CBOR through `minicbor`).
//!
//! With the `broker` feature (std): `broker`, how both ends reach the broker (URL, credentials,
//! TLS client configuration through rustls).
//!
//! The crate is `no_std` and allocation-free; the `std` feature adds `std::error::Error` impls.

#![forbid(unsafe_code)]
#![no_std]
// A DecodeError carries its field path inline (no allocator in no_std); errors are the cold path.
#![allow(clippy::result_large_err)]
// Messages hold their bounded fields inline by design: no allocator, no Box.
#![allow(clippy::large_enum_variant)]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "broker")]
pub mod broker;
pub mod codec;
pub mod examples;
pub mod messages;
pub mod text;
pub mod topics;

pub use codec::{DecodeError, DecodeErrorKind, EncodeError, Message, decode, encode};
pub use messages::*;
pub use text::{Text, TooLong};
pub use topics::{Topic, TopicError, TopicKind};

/// The protocol version carried in every message. A receiver rejects any other version with
/// [`DecodeErrorKind::UnsupportedVersion`].
pub const PROTOCOL_VERSION: u16 = 1;
