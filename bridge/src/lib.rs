//! `outpost-bridge`: the central side of Outpost. It speaks MQTT to the agents and Marathon's
//! REST API to the rest of the world.
//!
//! Read in this order: [`core`] (the state and the scheduler, no I/O), [`app`] (Marathon's app
//! definition), [`placement`] (constraints and resource fit), [`api`] (the HTTP routes),
//! [`runtime`] (wiring: store, MQTT, events), [`store`], [`config`].

pub mod api;
pub mod app;
pub mod auth;
pub mod certs;
pub mod config;
pub mod core;
pub mod lb;
pub mod mesos;
pub mod placement;
pub mod runtime;
pub mod signing;
pub mod store;
pub mod time;
