//! Layer 1: Doorman is the MCP authorization server, and `/mcp` its protected resource.
//!
//! People sign in once (local accounts here; SSO federation builds on the same flow), approve a
//! client once, and the client holds short-lived signed access tokens and rotating refresh
//! tokens. See `README.md` beside this file for the endpoints, the flow's state and the errors.

pub mod accounts;
pub mod cimd;
pub mod client_assertion;
pub mod fetch;
