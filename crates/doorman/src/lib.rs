//! Doorman: a two-layer authentication gateway for MCP.
//!
//! Layer 1 (people sign in to Doorman) and layer 2 (people connect each resource) build on the
//! gateway: one MCP endpoint in front of many upstream MCP servers, on both protocol
//! generations. `docs/ARCHITECTURE.md` is the map: layers, the path of one request, invariants.

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod crypto;
pub mod edge;
pub mod fuzz;
pub mod gateway;
pub mod listener;
pub mod log_batch;
pub mod metrics;
pub mod net;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod sign_in;
pub mod store;
pub mod vault;
pub mod web;
