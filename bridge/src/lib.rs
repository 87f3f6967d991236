//! `outpost-bridge`: the central side of Outpost. It speaks MQTT to the agents and Marathon's
//! REST API and Mesos's APIs to the rest of the world.
//!
//! Layers, bottom up (each uses only those below it):
//! - [`core`]: the state and the decisions, no I/O, no clock ([`app`], [`placement`] beside it);
//! - [`store`]: where the state is kept ([`store::StateStore`]);
//! - [`handle`]: the one owner of the core, and the handle to it every edge uses;
//! - the edges: [`marathon`] and [`mesos`] (HTTP), [`mqtt`] (the agents);
//! - [`server`]: composes the routers and starts everything.

pub mod app;
pub mod auth;
pub mod callbacks;
pub mod certs;
pub mod config;
pub mod core;
pub mod ha;
pub mod handle;
pub mod lb;
pub mod logs;
pub mod marathon;
pub mod memory;
pub mod mesos;
pub mod metrics;
pub mod mqtt;
pub mod placement;
pub mod server;
pub mod signing;
pub mod store;
pub mod time;
