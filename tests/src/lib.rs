//! The real-service test harness every end-to-end test uses.
//!
//! Each helper starts (or reuses) a real service on loopback and cleans up after itself on
//! drop, also when a test fails: [`docker`] (dockerd, labelled test containers), [`mosquitto`]
//! (a broker per test), [`registry`] (a Docker registry per test, open or with htpasswd auth),
//! [`image`] (the busybox-static test image). Tests wait by polling with [`wait::until`], never
//! by sleeping for a fixed time.

#![forbid(unsafe_code)]

pub mod agent;
pub mod bin_path;
pub mod bridge;
pub mod bridge_sim;
pub mod callback;
pub mod deb;
pub mod disk;
pub mod docker;
pub mod fleet_sim;
pub mod http;
pub mod https;
pub mod image;
pub mod mesos_client;
pub mod mosquitto;
pub mod net;
pub mod process;
pub mod proxy;
pub mod registry;
pub mod specs;
pub mod wait;
pub mod zookeeper;
