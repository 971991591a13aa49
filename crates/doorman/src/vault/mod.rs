//! Layer 2: people connect their own accounts at resources, and Doorman keeps the tokens.
//!
//! A **resource** is configured once (`[[resources]]`: endpoints or an issuer to discover them,
//! client credentials, scopes, lifetime policy); presets fill in well-known providers (GitHub,
//! Google, Linear, Slack, Atlassian, Notion). An upstream MCP server that does MCP
//! authorization itself becomes a resource discovered automatically (protected resource
//! metadata → its authorization server → CIMD or dynamic registration → PKCE).
//!
//! A **connection** is one person's authorization of one account at one resource: sealed
//! access and refresh tokens, scopes, the account's identity at the resource, `authorized_at`,
//! expiry, and its **binding** — `session` (one conversation, the default), `user` (across
//! conversations), `call` (one tool call) or `shared` (one operator credential for everyone,
//! still audited per person). `max_age` is measured from `authorized_at` on every call: inside
//! it an expired token is refreshed silently (single-flight across nodes), past it the person
//! authorizes again. When a tool call needs a connection that is missing or too old, the person
//! gets the connect prompt (URL elicitation, or a tool error with the link), whose `/connect/…`
//! page checks that the signed-in browser is the person the prompt was made for, then sends it
//! to the resource with PKCE and a single-use `state`; the resource redirects back to
//! `{public_url}/connect/callback`. Disconnecting revokes at the resource (RFC 7009) where it
//! can. Doorman's own tokens never go upstream; an upstream tied to a resource receives the
//! active connection's token.
//!
//! See DESIGN.md §5. This module so far: the resources and their presets
//! ([`resources`], [`presets`]), the authorization request towards a resource, and the sealing
//! of a connection's tokens ([`tokens`]; rows in `store::connections`, with the refresh lease).

pub mod presets;
pub mod resources;
pub mod tokens;
