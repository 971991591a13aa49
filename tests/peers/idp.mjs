// A corporate OpenID Connect provider for Doorman's tests: `oidc-provider` (pinned in
// package.json) on loopback, with static clients, password accounts carrying a `groups` claim,
// our own login and consent pages, and control endpoints the tests use to act as the IdP's admin.
//
// Start (Node 22 from tests/peers; tests/e2e/idp.py does this for pytest):
//   node tests/peers/idp.mjs --port 9400 --config idp.json
//   IDP_PORT=9400 IDP_CONFIG=idp.json node tests/peers/idp.mjs
//   IDP_PORT=9400 IDP_CONFIG_JSON='{"clients": [...], "accounts": [...]}' node tests/peers/idp.mjs
// It listens on 127.0.0.1 only; the issuer is http://127.0.0.1:<port>. One line
// `idp: listening on http://127.0.0.1:<port>` on stdout when ready; GET /healthz answers 200.
//
// Config JSON:
//   {
//     "clients": [{                      // oidc-provider client metadata, plus:
//       "client_id": "doorman", "client_secret": "s3cret",
//       "redirect_uris": ["http://127.0.0.1:8421/sign-in/callback"],
//       "token_endpoint_auth_method": "client_secret_basic",   // or client_secret_post, none
//       "skip_consent": false            // true: a first-party app, no consent page at the IdP
//     }],                                //   (grant_types default to authorization_code + refresh_token)
//     "accounts": [{
//       "username": "alice", "password": "pw",          // what the login form checks
//       "sub": "00u-alice",                 // default: the username
//       "email": "alice@example.com", "email_verified": true, "name": "Alice Example",
//       "groups": ["engineering"],          // any other key is one more claim (scope profile)
//       "disabled": false
//     }],
//     "ttl": {"AccessToken": 3600, "IdToken": 3600, "RefreshToken": 1209600, ...},  // optional
//     "resource_server": {               // optional: also the authorization server of a resource
//       "audience": "http://127.0.0.1:9500/mcp",   // the one resource (RFC 8707 indicator, `aud`)
//       "scopes": ["notes:read", "notes:write"],   // its scopes (beside the OIDC ones)
//       "access_token_ttl": 3600,        // seconds; short values let tests exercise refresh
//       "always_refresh": false,         // true: a refresh token without offline_access
//       "registration": true,            // optional: open RFC 7591 registration at /reg; or
//                                        //   {"skip_consent": true}: its clients see no consent page
//       "id_jag": {                      // optional: accept ID-JAGs (jwt-bearer grant; see below)
//         "trusted_issuers": [{
//           "issuer": "http://127.0.0.1:9400",         // a corporate IdP (another idp.mjs)
//           "jwks_uri": "http://127.0.0.1:9400/jwks",  // default: its discovery's jwks_uri
//           "subject": "sub"             // or "email": the local account with the ID-JAG's email
//         }],
//         "refresh_token": false         // true: a refresh token too (draft §4.4.3: SHOULD NOT)
//       }
//     },
//     "id_jag": {                        // optional: issue ID-JAGs by token exchange (see below)
//       "ttl": 300,                      // seconds an ID-JAG lives (its exp - iat)
//       "include_email": true,           // the person's email claim in the ID-JAG
//       "include_groups": false,         // the person's groups claim too (a custom claim, as
//                                        //   Okta or Entra add by configuration)
//       "refresh_token_subject": true,   // accept this IdP's refresh tokens as subject_token
//       "audiences": [{                  // the resource authorization servers it brokers access to
//         "audience": "http://127.0.0.1:9600",         // one's issuer: the ID-JAG's aud
//         "aliases": ["urn:example:notes"],            // optional: other `audience` values for it
//         "resources": ["http://127.0.0.1:9500/mcp"],  // the resources paired with it (RFC 8707)
//         "scopes": ["notes:read", "notes:write"],     // the most it may grant there
//         "clients": {"doorman": "doorman-at-notes"}   // requesting client here -> its client_id there
//       }]
//     },
//     "exchange": {                      // optional: issue access tokens for internal APIs on behalf
//       "audiences": [{                  //   of the person, by token exchange (see below)
//         "audience": "http://127.0.0.1:9700/mcp",     // the API's identifier: the token's aud
//         "scopes": ["wiki:read", "wiki:write"],       // the most it may grant there
//         "clients": ["doorman"],        // the requesting clients that may get tokens for it
//         "ttl": 300                     // seconds such a token lives (its exp - iat; default 300)
//       }]
//     }
//   }
//
// The provider:
//   discovery  /.well-known/openid-configuration, JWKS /jwks, authorize /auth, token /token,
//   userinfo /me, revocation /token/revocation, introspection /token/introspection.
//   Scopes openid email profile groups offline_access; claims email, email_verified (email),
//   name, preferred_username (profile), groups (groups, an array). Claims of the granted scopes
//   are in the ID token too (conformIdTokenClaims off, as Okta/Entra/Google do). auth_time,
//   amr ["pwd"] and acr "urn:doorman-test:pwd" (a password login) are in every ID token.
//   PKCE (S256) is required for every client. ID tokens are RS256 by default (an ES256 key is
//   published too; a client may ask for it with id_token_signed_response_alg).
//   Refresh tokens: ask for offline_access with prompt=consent; oidc-provider (per OIDC Core
//   §11) drops offline_access from any authorization request whose `prompt` lacks `consent`,
//   including one with no prompt at all (`prompt=consent` or `prompt=login consent` get a
//   refresh token). With `resource_server`, a request with offline_access and no prompt gets
//   prompt=consent added, so it gets a refresh token too. Refresh tokens rotate.
//
// As a resource's authorization server (config `resource_server`; standing in for GitHub,
// Linear, ...): access tokens from the code and refresh grants are JWTs (RFC 9068, header typ
// at+jwt, RS256) with iss, sub, aud (the audience), client_id, scope (only the resource's scopes
// that were granted, e.g. "notes:read"), iat, exp, jti. A client that sends no `resource` gets
// the audience by default; any other `resource` is invalid_target. The OIDC scopes still work
// beside them ("openid email notes:read offline_access" gives an ID token too), and so does a
// request with no OIDC scope at all ("notes:read"; no nonce then: OIDC parameters need openid).
// Clients default to require_auth_time false in this mode for the same reason. Discovery lists
// the resource's scopes in scopes_supported and is served at
// /.well-known/oauth-authorization-server (RFC 8414) too. Such a JWT is not accepted at /me
// and cannot be revoked (oidc-provider answers 400 unsupported_token_type, as RFC 7009 allows);
// revoking the refresh token ends the grant and its refresh tokens (JWTs live until exp).
// An explicit `resource` equal to the audience works at /auth and at /token (code and refresh
// grants) for every client, static or registered.
//
// Dynamic client registration (resource_server.registration; RFC 7591, oidc-provider's
// features.registration): POST /reg with a JSON body, no initial access token. Discovery (both
// well-known paths) then lists registration_endpoint <issuer>/reg. Only redirect_uris is
// required; token_endpoint_auth_method defaults to client_secret_basic (RFC 7591), "none" makes
// a public client (no client_secret in the answer); grant_types default to authorization_code
// + refresh_token (a client registering ["authorization_code"] alone gets no refresh tokens).
// Answers 201 with the metadata, client_id, client_id_issued_at, registration_client_uri and
// registration_access_token (RFC 7592 read only: GET /reg/<client_id>; no update/delete).
// http://127.0.0.1 redirect URIs are fine (application_type web, code flow). `scope` may hold
// the resource's scopes as well as the OIDC ones (oidc-provider alone would refuse the former
// with invalid_client_metadata; they are kept aside and echoed back); unknown scopes are
// invalid_client_metadata. A registered `scope` limits the OIDC scopes the client may ask for,
// never the resource's. Registered clients live in memory until the process ends.
//
// Identity Assertion JWT Authorization Grant, the IdP side (config `id_jag`; draft-ietf-oauth-
// identity-assertion-authz-grant, "the draft", profiled by MCP's Enterprise-Managed Authorization
// extension, "ext-auth"). A client exchanges the person's ID token (or a refresh token of this IdP)
// for an ID-JAG at /token with RFC 8693 token exchange (draft §4.3):
//   grant_type=urn:ietf:params:oauth:grant-type:token-exchange
//   requested_token_type=urn:ietf:params:oauth:token-type:id-jag
//   subject_token=<ID token>  subject_token_type=urn:ietf:params:oauth:token-type:id_token
//     (or a refresh token, subject_token_type=urn:ietf:params:oauth:token-type:refresh_token)
//   audience=<the resource AS's issuer>  [resource=<the resource>]  [scope=notes:read ...]
// with the client's usual authentication (a public client is unauthorized_client: draft §8.1,
// ext-auth §7.7). Static clients get this grant by default in this mode (unless their config names
// grant_types). The answer (RFC 8693 §2.2.1, draft §4.3.4): {"access_token": <the ID-JAG>,
// "issued_token_type": "urn:ietf:params:oauth:token-type:id-jag", "token_type": "N_A",
// "expires_in": ttl, "scope": the granted scopes}, never a refresh token. The ID-JAG (draft §3.1):
// header {"alg": "RS256", "typ": "oauth-id-jag+jwt", "kid": the current RS256 key, in /jwks};
// claims iss, sub (the person's sub here), aud (the audience's issuer, for an alias too),
// client_id (the requesting client's id at that AS, from `clients`: draft §5), jti, iat, exp
// (iat + ttl), resource (as asked: a string, an array for several; absent if none asked), scope
// (granted; absent if none), auth_time/acr/amr of the login, email (include_email). Checks, in
// order, and their refusals (RFC 6749 §5.2, 400 with an error_description saying which):
//   invalid_request   requested_token_type other than id-jag, a missing parameter, another
//                     subject_token_type, several audiences
//   invalid_grant     the subject token (draft §4.3.3): an ID token not signed by a published key
//                     of this IdP, of another iss, whose aud is not the authenticated client, or
//                     expired; a refresh token unknown, of another client, expired, already rotated
//                     or revoked; the person unknown or disabled
//   invalid_target    an audience not in `audiences` (nor an alias; RFC 8693 §2.2.2), a resource
//                     not paired with it (ext-auth §7.6.1)
//   access_denied     the client has no client_id at that audience, or the admin's policy
//                     (/_control/id-jag/policy) refuses (the draft's proposed code for "valid
//                     subject token, not authorized"; the policy may name another error)
//   invalid_scope     none of the requested scopes may be granted
// No scope asked: all that the audience and the policy allow; some asked: those of them allowed.
// Discovery lists the grant in grant_types_supported and
// identity_chaining_requested_token_types_supported ["urn:ietf:params:oauth:token-type:id-jag"].
//
// On-behalf-of token exchange for internal APIs (config `exchange`; RFC 8693 delegation, as a
// corporate IdP's exchange endpoint does it): the same grant at /token turns the person's ID token
// into a plain access token for one internal API, the requesting client acting for the person:
//   grant_type=urn:ietf:params:oauth:grant-type:token-exchange
//   requested_token_type=urn:ietf:params:oauth:token-type:access_token   (or none: see below)
//   subject_token=<ID token>  subject_token_type=urn:ietf:params:oauth:token-type:id_token
//   audience=<one of exchange.audiences>  [resource=<the same audience>]  [scope=wiki:read ...]
// with the client's usual authentication (client_secret_basic or _post; a public client is
// unauthorized_client). actor_token and actor_token_type are accepted and ignored. Which path a
// request takes: requested_token_type access_token -> this one; id-jag -> the ID-JAG one; none
// (RFC 8693 §2.1 lets the server choose) -> this one when `audience` is an exchange audience (or
// when there is no `id_jag` config), else the ID-JAG one (which then wants requested_token_type).
// Static clients get the grant by default with `exchange` too. The answer (RFC 8693 §2.2.1):
// {"access_token": <JWT>, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
// "token_type": "Bearer", "expires_in": the audience's ttl, "scope": the granted scopes (absent if
// none)}, never a refresh token. The JWT (RFC 9068 shape): header {"alg": "RS256", "typ":
// "at+jwt", "kid": the current RS256 key, in /jwks (signed as ID-JAGs are)}; claims iss (this
// IdP), sub (the person's sub), aud (the audience), client_id (the requesting client), act
// {"sub": the requesting client} (RFC 8693 §4.1: who acts for the subject), scope (granted;
// absent if none), iat, exp (iat + ttl), jti, email (if the account has one). It is not stored:
// /me and introspection do not know it; the API checks it against /jwks like any RFC 9068 token.
// Checks, in order, and their refusals (400, an error_description saying which):
//   unauthorized_client  a public client (no client authentication)
//   invalid_request   a missing subject_token, subject_token_type or audience; several audiences;
//                     a subject_token_type other than id_token (no refresh tokens here); an
//                     audience that is an `id_jag` audience (those get ID-JAGs, not access tokens)
//   invalid_grant     the subject token, checked exactly as for an ID-JAG: signed by a published
//                     key of this IdP, iss this IdP, aud the authenticated client, unexpired; the
//                     person unknown or disabled
//   invalid_target    an audience not in exchange.audiences (RFC 8693 §2.2.2); a `resource` other
//                     than the audience
//   unauthorized_client  the client is not in that audience's `clients` (RFC 6749 §5.2: this
//                     client may not use this grant for that API)
//   access_denied     the admin's policy (/_control/id-jag/policy, shared with ID-JAGs) refuses:
//                     deny_subjects, deny_audiences (the exchange audience), deny_clients,
//                     require_groups (the policy may name another error)
//   invalid_scope     none of the requested scopes is allowed (the audience's scopes, capped by
//                     the policy's `scopes` for that person)
// No scope asked: all that the audience and the policy allow; some asked: those of them allowed.
//
// As a resource AS accepting ID-JAGs (config resource_server.id_jag; draft §4.4, RFC 7523 §2.1):
// the client presents one at /token with grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer
// and assertion=<the ID-JAG> (optional scope and resource), authenticating as its client here.
// Static clients get this grant by default in this mode (unless their config names grant_types);
// discovery lists it and authorization_grant_profiles_supported
// ["urn:ietf:params:oauth:grant-profile:id-jag"] (draft §7). Checks, in order, each refusing
// invalid_grant with an error_description naming it (draft §4.4.1, RFC 7523 §3, ext-auth §7.4):
// a compact JWS; typ oauth-id-jag+jwt; alg RS256, PS256, ES256, ES384 or EdDSA (never none);
// iss a trusted issuer, and not this server itself (draft §8.3); a key of the issuer's JWKS
// verifies the signature (fetched over loopback, cached per issuer, fetched again for an unknown
// kid); aud this issuer (a string, or an array of exactly that one); exp in the future and iat
// not (5 s of skew); sub, jti and client_id present; client_id the authenticated client; no cnf
// (no DPoP here: draft §8.6.1.2.2); resource, if present, includes resource_server.audience;
// every scope in its scope is the resource's (ext-auth §7.6.2); its jti not used before (single
// use per issuer, ext-auth §7.4.2); the account: subject "sub" takes the ID-JAG's sub (a
// disabled local account with that sub is refused; an unknown one is created in memory, just in
// time), "email" the local account with the ID-JAG's email (none or disabled: refused). A
// `resource` parameter other than the audience is invalid_target; a `scope` parameter sharing no
// scope with the ID-JAG is invalid_scope. The answer: the same RFC 9068 JWT access token the code
// flow issues
// (aud the audience, sub the account, client_id, scope = the ID-JAG's scopes, narrowed to the
// `scope` parameter if one was sent: ext-auth §7.2.1), token_type Bearer, expires_in, scope; a
// refresh token only with refresh_token true (a grant of its own; the refresh grant then works).
//
// Pages (plain HTML forms, no scripts, nothing loaded from elsewhere; work for an HTTP client
// and for a browser alike):
//   GET  /interaction/<uid>          login form: `username`, `password`, submit button
//                                    (or consent: buttons `decision` = `allow` / `deny`)
//   POST /interaction/<uid>/login    wrong password, unknown or disabled account: the form
//                                    again with "Incorrect username or password." (401)
//   POST /interaction/<uid>/consent  `deny` ends the flow with error=access_denied at the client
//
// Control endpoints (JSON; test-only, on the same loopback port under /_control/):
//   GET  /_control/accounts                  the accounts (no passwords) with `disabled`
//   POST /_control/accounts                  body: an account; creates or replaces it by username
//   POST /_control/accounts/<username>/disable
//        disables the account the way an admin does at a real IdP: its grants (and with them
//        every access and refresh token) and its sessions are revoked, userinfo and refresh
//        grants fail (invalid_grant), and it can no longer log in. Answers {"revoked_grants": N}.
//   POST /_control/accounts/<username>/enable
//   POST /_control/rotate-keys               body (optional): {"keep_previous": true}
//        new RS256 and ES256 keys with new kids sign from now on; the previous keys stay
//        published (keep_previous true, default) or are dropped. Grants, sessions and tokens
//        survive. Answers {"kids": [new kids], "jwks": {...}}.
//   POST /_control/next-id-token             body: {"claims": {..}, "remove": [..],
//        "header": {..}, "key": "current" | "unpublished", "tamper_signature": false}
//        the next token response carrying an ID token gets it re-signed after these changes
//        (claims merged, `remove`d claims dropped, header fields merged, a header field set to
//        null dropped; "unpublished" signs with an RS256 key that is never in the JWKS;
//        tamper_signature flips the signature; "expired": true sets iat 10 min and exp 5 min ago).
//        For negative tests: wrong nonce/aud/azp/iss, expired, unknown kid, bad signature.
//   POST /_control/next-id-jag               body: as /_control/next-id-token ("header": {"typ":
//        "JWT"} a wrong typ, {"typ": null} none, {"alg": "none"} an unsigned token); the next
//        ID-JAG the token exchange issues is doctored so (queued, oldest first). Answers
//        {"queued": n, "unpublished_kid": kid}.
//   GET  /_control/id-jag/policy             the IdP admin's policy for token exchange: ID-JAGs
//        and (config `exchange`) on-behalf-of access tokens alike
//   POST /_control/id-jag/policy             body: {"deny_subjects": [username or sub],
//        "deny_audiences": [issuer or alias], "deny_clients": [requesting client_id],
//        "require_groups": [..] (the person must be in one), "scopes": {"<username or sub>":
//        [the most that person may get]}, "error": "access_denied", "error_description": ".."}
//        replaces the policy ({} lets through whatever `id_jag` and `exchange` allow). A token
//        exchange the policy refuses answers 400 with `error` (default access_denied); for an
//        access token, deny_audiences names the exchange audience. Answers the policy.
//   POST /_control/fail                      body: {"path": "/token", "status": 503, "times": 1,
//        "grant_type": "refresh_token", "error": "invalid_grant", "error_description": ".."}
//        the next `times` requests to that path (only token requests of that grant_type, if
//        given) answer `status` with {"error", "error_description"} (a provider having a bad
//        day; error defaults to temporarily_unavailable for 5xx, invalid_grant otherwise).
//   GET  /_control/requests                  what clients sent: [{method, path, route, status,
//        params}] for /auth, /token, /token/revocation (no secrets: code, tokens, verifier and
//        client_secret are masked; grant_type and token_type_hint show), /me, /jwks and
//        discovery (path as asked: /.well-known/openid-configuration or
//        /.well-known/oauth-authorization-server), oldest first (last 500). POST /reg entries
//        (route "registration") carry params = the client metadata as sent (client_secret,
//        registration_access_token masked), client_id (issued, else null) and error (if
//        refused). Requests answered by /_control/fail are there too, with "injected": true.
//        subject_token, actor_token and assertion are masked too. A token exchange for an ID-JAG
//        carries "id_jag": {issued: true, subject_token_type, header, claims} or {issued: false,
//        subject_token_type, error, error_description}; one for an on-behalf-of access token
//        (config `exchange`) "exchange": {issued: true, subject_token_type, audience, header,
//        claims} or {issued: false, subject_token_type, audience (as asked), error,
//        error_description}; a jwt-bearer request at a resource AS
//        {accepted: true, iss, sub, jti, client_id, account, scope, refresh_token} or {accepted:
//        false, iss, sub, jti, client_id (as read, or null), error, error_description}.
//   GET  /_control/clients                   dynamically registered clients as stored, oldest
//        first: their metadata (scope as registered) and has_secret; never the secret.
//   GET  /_control/revocations               {"count": N, "revocations": [{client_id,
//        token_type_hint, status, token_sha256_prefix}]}: every revocation request, oldest first;
//        token_sha256_prefix is the first 12 hex digits of SHA-256 of the token (never the token).
//   POST /_control/reset-requests            empties both logs

import {
  constants as cryptoConstants, createHash, createPublicKey, generateKeyPairSync, randomBytes,
  sign as cryptoSign, verify as cryptoVerify,
} from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

// --- configuration ------------------------------------------------------------------------

const { values: argv } = parseArgs({
  options: { port: { type: 'string' }, config: { type: 'string' } },
  allowPositionals: false,
});
const port = Number(argv.port ?? process.env.IDP_PORT);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('idp: give a port: --port N or IDP_PORT');
  process.exit(2);
}
const configPath = argv.config ?? process.env.IDP_CONFIG;
const config = configPath
  ? JSON.parse(readFileSync(configPath, 'utf8'))
  : JSON.parse(process.env.IDP_CONFIG_JSON ?? '{}');
const issuer = `http://127.0.0.1:${port}`;

// The ID-JAG vocabulary (draft-ietf-oauth-identity-assertion-authz-grant, RFC 8693, RFC 7523).
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
const TT_ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
const TT_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';
const TT_REFRESH_TOKEN = 'urn:ietf:params:oauth:token-type:refresh_token';
const TT_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
const ID_JAG_TYP = 'oauth-id-jag+jwt';
const ID_JAG_PROFILE = 'urn:ietf:params:oauth:grant-profile:id-jag';

const isStringList = (v) => Array.isArray(v) && v.every((x) => typeof x === 'string' && x);
const resourceServer = readResourceServer(config.resource_server);
const idJag = readIdJag(config.id_jag);
const exchange = readExchange(config.exchange);

function readResourceServer(rs) {
  if (!rs) return null;
  if (!URL.canParse(rs.audience ?? '')) throw new Error('resource_server.audience must be an absolute URL');
  const scopes = rs.scopes ?? [];
  if (!Array.isArray(scopes) || scopes.some((s) => typeof s !== 'string' || !s || s.includes(' '))) {
    throw new Error('resource_server.scopes must be a list of scope names');
  }
  const reg = rs.registration;
  return {
    audience: rs.audience,
    scopes,
    accessTokenTTL: Number(rs.access_token_ttl ?? 3600),
    alwaysRefresh: Boolean(rs.always_refresh),
    // RFC 7591 dynamic client registration: true, or {"skip_consent": true} for clients that
    // never see the consent page (as if the person had consented before).
    registration: reg ? { skipConsent: Boolean(reg === true ? false : reg.skip_consent) } : null,
    idJag: readIdJagAcceptance(rs.id_jag),
  };
}

// resource_server.id_jag: the IdPs whose ID-JAGs this resource AS accepts (draft §4.1: each
// trusted issuer is configured, with how its subjects map to local accounts).
function readIdJagAcceptance(cfg) {
  if (!cfg) return null;
  const trustedIssuers = (cfg.trusted_issuers ?? []).map((t) => {
    if (!URL.canParse(t?.issuer ?? '')) throw new Error('resource_server.id_jag.trusted_issuers[].issuer must be a URL');
    if (t.jwks_uri !== undefined && !URL.canParse(t.jwks_uri)) throw new Error('trusted_issuers[].jwks_uri must be a URL');
    const subject = t.subject ?? 'sub';
    if (!['sub', 'email'].includes(subject)) throw new Error('trusted_issuers[].subject must be "sub" or "email"');
    return { issuer: t.issuer, jwksUri: t.jwks_uri ?? null, subject };
  });
  return { trustedIssuers, refreshToken: Boolean(cfg.refresh_token) };
}

// `id_jag`: this IdP issues ID-JAGs for these audiences (resource authorization servers).
function readIdJag(cfg) {
  if (!cfg) return null;
  const audiences = (cfg.audiences ?? []).map((a) => {
    if (typeof a?.audience !== 'string' || !a.audience) throw new Error('id_jag.audiences[].audience is required');
    for (const key of ['aliases', 'resources', 'scopes']) {
      if (a[key] !== undefined && !isStringList(a[key])) throw new Error(`id_jag.audiences[].${key} must be a list of strings`);
    }
    const clientIds = a.clients ?? {};
    if (typeof clientIds !== 'object' || Object.values(clientIds).some((v) => typeof v !== 'string' || !v)) {
      throw new Error('id_jag.audiences[].clients maps a client_id here to a client_id there');
    }
    return {
      audience: a.audience, aliases: a.aliases ?? [], resources: a.resources ?? [], scopes: a.scopes ?? [],
      clients: clientIds,
    };
  });
  return {
    audiences,
    ttl: Number(cfg.ttl ?? 300),
    includeEmail: cfg.include_email !== false,
    includeGroups: cfg.include_groups === true,
    refreshTokenSubject: cfg.refresh_token_subject !== false,
  };
}

// `exchange`: this IdP issues access tokens for these internal APIs, on behalf of the person,
// to these requesting clients (RFC 8693 delegation).
function readExchange(cfg) {
  if (!cfg) return null;
  const audiences = (cfg.audiences ?? []).map((a) => {
    if (typeof a?.audience !== 'string' || !a.audience) throw new Error('exchange.audiences[].audience is required');
    for (const key of ['scopes', 'clients']) {
      if (a[key] !== undefined && !isStringList(a[key])) throw new Error(`exchange.audiences[].${key} must be a list of strings`);
    }
    if ((a.scopes ?? []).some((s) => s.includes(' '))) throw new Error('exchange.audiences[].scopes are scope names');
    const lifetime = Number(a.ttl ?? 300);
    if (!Number.isInteger(lifetime) || lifetime <= 0) throw new Error('exchange.audiences[].ttl is a number of seconds');
    return { audience: a.audience, scopes: a.scopes ?? [], clients: a.clients ?? [], ttl: lifetime };
  });
  return { audiences };
}

const log = (...args) => console.log('idp:', ...args);

// --- accounts -------------------------------------------------------------------------------

const accounts = new Map(); // username -> account record
function putAccount(input) {
  if (!input || typeof input.username !== 'string' || !input.username) {
    throw new Error('an account needs a username');
  }
  const { username, password = '', disabled = false, sub = username, ...claims } = input;
  accounts.set(username, { username, password: String(password), disabled: Boolean(disabled), sub: String(sub), claims });
  return accounts.get(username);
}
for (const a of config.accounts ?? []) putAccount(a);

const bySub = (sub) => [...accounts.values()].find((a) => a.sub === sub);
const byEmail = (email) => [...accounts.values()]
  .find((a) => typeof a.claims.email === 'string' && a.claims.email.toLowerCase() === String(email).toLowerCase());

// People a resource AS met first through an ID-JAG (subject "sub", no local account with that
// sub): created just in time, in memory, so that refresh grants find them (findAccount).
const federatedAccounts = new Map(); // sub -> account record (as in `accounts`)
const publicAccount = (a) => ({ username: a.username, sub: a.sub, disabled: a.disabled, ...a.claims });

function sameSecret(a, b) {
  // Constant-time enough for a test peer: compare digests.
  return createHash('sha256').update(a).digest().equals(createHash('sha256').update(b).digest());
}

// --- storage shared by every provider instance (key rotation swaps the instance) -----------

const store = new Map(); // `${model}:${id}` -> {payload, expiresAt}
const GRANTABLE = ['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest'];

class Store {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { payload, expiresAt });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async findByUid(uid) {
    for (const [key, entry] of store) {
      if (key.startsWith('Session:') && entry.payload.uid === uid) return this.find(key.slice(8));
    }
    return undefined;
  }

  async findByUserCode(userCode) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && entry.payload.userCode === userCode) {
        return this.find(key.slice(this.model.length + 1));
      }
    }
    return undefined;
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (entry.payload.grantId === grantId && GRANTABLE.some((m) => key.startsWith(`${m}:`))) {
        store.delete(key);
      }
    }
  }
}

// Every grant, token and session of an account: what an admin's "deactivate" removes.
function revokeAccount(sub) {
  const grants = new Set();
  for (const [key, entry] of store) {
    if (key.startsWith('Grant:') && entry.payload.accountId === sub) grants.add(key.slice(6));
  }
  for (const [key, entry] of store) {
    const p = entry.payload;
    if ((p.grantId && grants.has(p.grantId)) || (key.startsWith('Session:') && p.accountId === sub)
      || (key.startsWith('Grant:') && grants.has(key.slice(6)))) {
      store.delete(key);
    }
  }
  return grants.size;
}

// --- keys -----------------------------------------------------------------------------------

function newKey(kind) {
  const { privateKey } = kind === 'RS256'
    ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const kid = `${kind.toLowerCase()}-${randomBytes(6).toString('hex')}`;
  return { ...jwk, kid, alg: kind, use: 'sig' };
}

let signingKeys = [newKey('RS256'), newKey('ES256')]; // first of each alg signs
const unpublishedKey = newKey('RS256');

const b64u = (buf) => Buffer.from(buf).toString('base64url');

function signJws(header, payload, jwk) {
  const input = `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}`;
  const key = { key: jwk, format: 'jwk' };
  const signature = jwk.kty === 'EC'
    ? cryptoSign('sha256', Buffer.from(input), { ...key, dsaEncoding: 'ieee-p1363' })
    : cryptoSign('sha256', Buffer.from(input), key);
  return `${input}.${b64u(signature)}`;
}

// --- clients --------------------------------------------------------------------------------

const autoConsent = new Set();
// The ID-JAG grants (and token exchange for `exchange`) come by default to every static client
// of a provider that has them.
const defaultGrantTypes = ['authorization_code', 'refresh_token',
  ...(idJag || exchange ? [TOKEN_EXCHANGE] : []), ...(resourceServer?.idJag ? [JWT_BEARER] : [])];
const clients = (config.clients ?? []).map(({ skip_consent: skip, ...c }) => {
  if (skip) autoConsent.add(c.client_id);
  return { grant_types: defaultGrantTypes, response_types: ['code'], ...c };
});

// --- control state --------------------------------------------------------------------------

const idTokenChanges = []; // queued /_control/next-id-token bodies
const idJagChanges = []; // queued /_control/next-id-jag bodies
let idJagPolicy = {}; // /_control/id-jag/policy
const usedJtis = new Map(); // `${iss} ${jti}` of accepted ID-JAGs -> their exp (single use)
const issuerJwks = new Map(); // trusted issuer -> its JWKS keys, as last fetched
const failures = []; // {path, status, times, grant_type, error, error_description}
const requests = [];
const revocations = []; // {client_id, token_type_hint, status, token_sha256_prefix}
const MASKED = new Set(['code', 'code_verifier', 'refresh_token', 'client_secret', 'token',
  'client_assertion', 'password', 'registration_access_token', 'initial_access_token',
  'subject_token', 'actor_token', 'assertion']);

function masked(params) {
  const out = {};
  for (const [k, v] of Object.entries(params ?? {})) out[k] = MASKED.has(k) && v ? '***' : v;
  return out;
}

const sha256Prefix = (value) => createHash('sha256').update(String(value)).digest('hex').slice(0, 12);

function logRequest(entry) {
  requests.push(entry);
  if (requests.length > 500) requests.shift();
}

// Re-signs a JWS of ours after a /_control/next-id-token or /_control/next-id-jag change.
function rewriteJws(token, change) {
  const [h, p] = token.split('.');
  const header = { ...JSON.parse(Buffer.from(h, 'base64url')), ...(change.header ?? {}) };
  for (const [name, value] of Object.entries(header)) if (value === null) delete header[name];
  const payload = { ...JSON.parse(Buffer.from(p, 'base64url')), ...(change.claims ?? {}) };
  for (const claim of change.remove ?? []) delete payload[claim];
  if (change.expired) {
    const now = Math.floor(Date.now() / 1000);
    Object.assign(payload, { iat: now - 600, exp: now - 300 });
  }
  if (header.alg === 'none') {
    // An unsecured JWS (RFC 7515 Appendix A.5): no signature at all.
    return `${b64u(JSON.stringify(header))}.${b64u(JSON.stringify(payload))}.`;
  }
  let key = signingKeys.find((k) => k.alg === header.alg) ?? signingKeys[0];
  if (change.key === 'unpublished') {
    key = unpublishedKey;
    header.alg = 'RS256';
    header.kid = change.header?.kid ?? unpublishedKey.kid;
  }
  let jws = signJws(header, payload, key);
  if (change.tamper_signature) {
    const [a, b, s] = jws.split('.');
    const sig = Buffer.from(s, 'base64url');
    sig[sig.length - 1] ^= 0x01;
    jws = `${a}.${b}.${b64u(sig)}`;
  }
  return jws;
}

// --- Identity Assertion JWT Authorization Grant (ID-JAG) ------------------------------------

// JWS algorithms accepted for ID tokens (as subject tokens) and ID-JAGs: an explicit allow-list,
// never "none" (RFC 8725 §3.1, ext-auth §7.4.1).
const JWS_ALGS = {
  RS256: { kty: 'RSA', hash: 'sha256' },
  PS256: { kty: 'RSA', hash: 'sha256', padding: cryptoConstants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
  ES256: { kty: 'EC', crv: 'P-256', hash: 'sha256', dsaEncoding: 'ieee-p1363' },
  ES384: { kty: 'EC', crv: 'P-384', hash: 'sha384', dsaEncoding: 'ieee-p1363' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519', hash: null }, // RFC 8037
};
const CLOCK_SKEW = 5; // seconds of tolerance on exp and iat
const epoch = () => Math.floor(Date.now() / 1000);
const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// A compact JWS taken apart, nothing verified; throws an Error saying what is wrong.
function decodeJws(jws) {
  const parts = String(jws).split('.');
  if (parts.length !== 3) throw new Error('not a compact JWS (three dot-separated parts)');
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
  } catch {
    throw new Error('header or payload is not base64url-encoded JSON');
  }
  if (!isPlainObject(header) || !isPlainObject(payload)) throw new Error('header and payload must be JSON objects');
  return { header, payload, input: `${parts[0]}.${parts[1]}`, signature: Buffer.from(parts[2], 'base64url') };
}

// Verifies a decoded JWS with one of `keys` (JWKs; private ones are fine, their public part is
// used): the header's kid picks the key when present. Throws an Error saying what failed.
function verifyJws(decoded, keys) {
  const { header } = decoded;
  const alg = JWS_ALGS[header.alg];
  if (!alg) throw new Error(`alg ${JSON.stringify(header.alg ?? null)} is not allowed (${Object.keys(JWS_ALGS).join(', ')})`);
  const candidates = keys.filter((k) => k.kty === alg.kty && (!alg.crv || k.crv === alg.crv)
    && (!k.alg || k.alg === header.alg) && (!k.use || k.use === 'sig')
    && (header.kid === undefined || k.kid === header.kid));
  if (!candidates.length) {
    throw new Error(header.kid !== undefined ? `no published key has kid ${JSON.stringify(header.kid)}` : `no published ${header.alg} key`);
  }
  const { kty, crv, hash, ...options } = alg;
  for (const jwk of candidates) {
    const key = createPublicKey({ key: jwk, format: 'jwk' });
    if (cryptoVerify(hash, Buffer.from(decoded.input), { key, ...options }, decoded.signature)) return jwk;
  }
  throw new Error('the signature does not verify');
}

// An RFC 6749 §5.2 error answer with our own error_description (oidc-provider's InvalidGrant
// would hide the description in error_detail).
const oauthError = (error, description) => new errors.CustomOIDCProviderError(error, description);

const ofPerson = (list, a) => (list ?? []).some((x) => x === a.username || x === a.sub);

// What is wrong with a /_control/id-jag/policy body, if anything (checked when set, so that a
// bad policy fails the test that sets it rather than a later token exchange).
function idJagPolicyProblem(policy) {
  if (!isPlainObject(policy)) return 'the policy is a JSON object';
  const known = ['deny_subjects', 'deny_audiences', 'deny_clients', 'require_groups', 'scopes', 'error', 'error_description'];
  const unknown = Object.keys(policy).filter((k) => !known.includes(k));
  if (unknown.length) return `unknown policy keys: ${unknown.join(', ')}`;
  for (const key of ['deny_subjects', 'deny_audiences', 'deny_clients', 'require_groups']) {
    if (policy[key] !== undefined && !(Array.isArray(policy[key]) && policy[key].every((x) => typeof x === 'string'))) {
      return `${key} must be a list of strings`;
    }
  }
  if (policy.scopes !== undefined && !(isPlainObject(policy.scopes) && Object.values(policy.scopes).every(isStringList))) {
    return 'scopes maps a username or sub to a list of scopes';
  }
  for (const key of ['error', 'error_description']) {
    if (policy[key] !== undefined && (typeof policy[key] !== 'string' || !policy[key])) return `${key} must be a string`;
  }
  return null;
}

// Why the admin's policy refuses this person, audience (any of `audienceNames`) or client, if it
// does: "for bob", ... (shared by the ID-JAG and the on-behalf-of exchanges).
function policyRefusal(policy, account, audienceNames, clientId) {
  return (policy.deny_subjects && ofPerson(policy.deny_subjects, account) && `for ${account.username}`)
    || ((policy.deny_audiences ?? []).some((x) => audienceNames.includes(x)) && `for ${audienceNames[0]}`)
    || ((policy.deny_clients ?? []).includes(clientId) && `for client ${clientId}`)
    || (policy.require_groups?.length && !(account.claims.groups ?? []).some((g) => policy.require_groups.includes(g))
      && `for ${account.username}: not in ${policy.require_groups.join(', ')}`)
    || null;
}

// The scopes granted: of `allowed` (capped by the policy's ceiling for the person), all when none
// were asked, else those asked; invalid_scope when some were asked and none is left.
function grantedScopes(policy, account, allowed, scopeParam, audience) {
  const ceiling = Object.entries(policy.scopes ?? {}).find(([who]) => who === account.username || who === account.sub);
  const capped = ceiling ? allowed.filter((sc) => ceiling[1].includes(sc)) : allowed;
  const asked = scopeParam ? scopeParam.split(' ').filter(Boolean) : null;
  const granted = asked ? asked.filter((sc) => capped.includes(sc)) : capped;
  if (asked && !granted.length) {
    throw oauthError('invalid_scope', `none of ${asked.join(' ')} may be granted for ${audience} (allowed: ${capped.join(' ') || 'none'})`);
  }
  return granted;
}

// A JWS of this IdP, signed like its ID tokens with the current RS256 key (published at /jwks).
function signWithCurrentKey(typ, claims) {
  const key = signingKeys.find((k) => k.alg === 'RS256');
  return signJws({ alg: 'RS256', typ, kid: key.kid }, claims, key);
}

// --- the IdP side: RFC 8693 token exchange for an ID-JAG (draft §4.3) ---

// The subject token's person and login (draft §4.3.3), or invalid_grant. `refreshTokens`: a
// refresh token of this IdP may be the subject too (the ID-JAG path, with refresh_token_subject).
async function exchangeSubject(ctx, token, type, refreshTokens) {
  const { provider, client } = ctx.oidc;
  const bad = (why) => oauthError('invalid_grant', `subject_token: ${why}`);
  let login;
  if (type === TT_ID_TOKEN) {
    let decoded;
    try {
      decoded = decodeJws(token);
      const typ = String(decoded.header.typ ?? '').toLowerCase().replace(/^application\//, '');
      if (['at+jwt', ID_JAG_TYP].includes(typ)) throw new Error(`typ ${decoded.header.typ} is not an ID token's`);
      verifyJws(decoded, signingKeys); // the keys this IdP publishes at /jwks
    } catch (e) {
      throw bad(e.message);
    }
    const c = decoded.payload;
    if (c.iss !== issuer) throw bad(`iss ${JSON.stringify(c.iss ?? null)} is not this IdP (${issuer})`);
    const aud = Array.isArray(c.aud) ? c.aud : [c.aud];
    if (!aud.includes(client.clientId)) {
      throw bad(`its aud ${JSON.stringify(c.aud ?? null)} is not the authenticated client ${client.clientId}`);
    }
    if (aud.length > 1 && c.azp !== client.clientId) throw bad(`azp ${JSON.stringify(c.azp ?? null)} is not ${client.clientId}`);
    if (typeof c.exp !== 'number' || c.exp <= epoch()) throw bad('the ID token is expired (or has no exp)');
    if (typeof c.sub !== 'string' || !c.sub) throw bad('no sub');
    login = { sub: c.sub, authTime: c.auth_time, acr: c.acr, amr: c.amr };
  } else if (type === TT_REFRESH_TOKEN && refreshTokens) {
    // The same checks as the refresh_token grant (draft §4.3.3), without rotating it.
    const rt = await provider.RefreshToken.find(token, { ignoreExpiration: true });
    if (!rt) throw bad('not a refresh token of this IdP (unknown or revoked)');
    if (rt.clientId !== client.clientId) throw bad(`the refresh token was issued to another client, not ${client.clientId}`);
    if (rt.isExpired) throw bad('the refresh token is expired');
    if (rt.consumed) throw bad('the refresh token was already used (rotated)');
    if (!await provider.Grant.find(rt.grantId)) throw bad('the refresh token\'s grant was revoked');
    login = { sub: rt.accountId, authTime: rt.authTime, acr: rt.acr, amr: rt.amr };
  } else {
    const known = [TT_ID_TOKEN, ...(refreshTokens ? [TT_REFRESH_TOKEN] : [])];
    throw oauthError('invalid_request', `subject_token_type ${JSON.stringify(type)} is not supported (${known.join(', ')})`);
  }
  const account = bySub(login.sub);
  if (!account) throw bad(`no person with sub ${login.sub}`);
  if (account.disabled) throw bad(`the account of ${account.username} is disabled`);
  return { account, login };
}

// The token-exchange grant: an on-behalf-of access token (config `exchange`) or an ID-JAG
// (config `id_jag`), by requested_token_type, or by audience when it is absent (RFC 8693 §2.1:
// the server chooses; see the header).
async function tokenExchangeHandler(ctx) {
  const params = ctx.oidc.params;
  const wanted = params.requested_token_type;
  const exchangeAudience = exchange && typeof params.audience === 'string'
    && exchange.audiences.some((a) => a.audience === params.audience);
  if (exchange && (wanted === TT_ACCESS_TOKEN || (!wanted && (exchangeAudience || !idJag)))) {
    await accessTokenExchange(ctx);
    return;
  }
  if (!idJag) {
    ctx.state.exchange = { issued: false, subject_token_type: params.subject_token_type ?? null, audience: params.audience ?? null };
    throw oauthError('invalid_request', `requested_token_type must be ${TT_ACCESS_TOKEN}: the only token this IdP issues by token exchange`);
  }
  await idJagExchange(ctx);
}

async function idJagExchange(ctx) {
  const { client } = ctx.oidc;
  const params = ctx.oidc.params;
  ctx.state.idJag = { issued: false, subject_token_type: params.subject_token_type ?? null };

  if (client.clientAuthMethod === 'none') {
    throw oauthError('unauthorized_client', 'token exchange for an ID-JAG needs client authentication (a confidential client)');
  }
  for (const name of ['requested_token_type', 'subject_token', 'subject_token_type', 'audience']) {
    if (!params[name]) throw oauthError('invalid_request', `${name} is required`);
  }
  if (params.requested_token_type !== TT_ID_JAG) {
    throw oauthError('invalid_request', `requested_token_type must be ${TT_ID_JAG}: the only token this IdP issues by token exchange`);
  }
  if (Array.isArray(params.audience)) throw oauthError('invalid_request', 'one audience only');

  const { account, login } = await exchangeSubject(ctx, params.subject_token, params.subject_token_type,
    idJag.refreshTokenSubject);

  const target = idJag.audiences.find((a) => a.audience === params.audience || a.aliases.includes(params.audience));
  if (!target) {
    throw oauthError('invalid_target', `audience ${params.audience} is not a resource authorization server this IdP brokers access to`);
  }
  const resources = params.resource === undefined ? [] : [params.resource].flat();
  const unpaired = resources.filter((r) => !target.resources.includes(r));
  if (unpaired.length) {
    throw oauthError('invalid_target', `resource ${unpaired.join(', ')} is not paired with audience ${target.audience}`);
  }
  const clientThere = target.clients[client.clientId];
  if (!clientThere) {
    throw oauthError('access_denied', `client ${client.clientId} is not authorized to broker access to ${target.audience}`);
  }

  // The administrator's policy (/_control/id-jag/policy): the IdP "evaluates policy" (draft §4.3.3).
  const policy = idJagPolicy;
  const refusal = policyRefusal(policy, account, [target.audience, ...target.aliases], client.clientId);
  if (refusal) {
    throw oauthError(policy.error ?? 'access_denied', policy.error_description ?? `the IdP's policy refuses an ID-JAG ${refusal}`);
  }
  const granted = grantedScopes(policy, account, target.scopes, params.scope, target.audience);

  // The ID-JAG (draft §3.1), signed like our ID tokens with the current RS256 key.
  const iat = epoch();
  const claims = {
    iss: issuer,
    sub: account.sub,
    aud: target.audience,
    client_id: clientThere,
    jti: randomBytes(16).toString('base64url'),
    iat,
    exp: iat + idJag.ttl,
    ...(resources.length ? { resource: resources.length === 1 ? resources[0] : resources } : {}),
    ...(granted.length ? { scope: granted.join(' ') } : {}),
    ...(login.authTime !== undefined ? { auth_time: login.authTime } : {}),
    ...(login.acr !== undefined ? { acr: login.acr } : {}),
    ...(login.amr !== undefined ? { amr: login.amr } : {}),
    ...(idJag.includeEmail && account.claims.email ? { email: account.claims.email } : {}),
    ...(idJag.includeGroups ? { groups: account.claims.groups ?? [] } : {}),
  };
  let idJagToken = signWithCurrentKey(ID_JAG_TYP, claims);
  if (idJagChanges.length) idJagToken = rewriteJws(idJagToken, idJagChanges.shift());
  const { header, payload } = decodeJws(idJagToken);
  ctx.state.idJag = { issued: true, subject_token_type: params.subject_token_type, header, claims: payload };
  log(`id-jag for ${account.username} (${account.sub}) -> ${target.audience} as client ${clientThere}`
    + `${granted.length ? `, scope ${granted.join(' ')}` : ''}`);

  // RFC 8693 §2.2.1 / draft §4.3.4: not an access token, hence token_type N_A.
  ctx.body = {
    access_token: idJagToken,
    issued_token_type: TT_ID_JAG,
    token_type: 'N_A',
    expires_in: idJag.ttl,
    ...(granted.length ? { scope: granted.join(' ') } : {}),
  };
}

// --- the IdP side: RFC 8693 on-behalf-of token exchange for an internal API's access token ---

async function accessTokenExchange(ctx) {
  const { client } = ctx.oidc;
  const params = ctx.oidc.params;
  const state = { issued: false, subject_token_type: params.subject_token_type ?? null, audience: params.audience ?? null };
  ctx.state.exchange = state;

  if (client.clientAuthMethod === 'none') {
    throw oauthError('unauthorized_client', 'token exchange for an access token needs client authentication (a confidential client)');
  }
  for (const name of ['subject_token', 'subject_token_type', 'audience']) {
    if (!params[name]) throw oauthError('invalid_request', `${name} is required`);
  }
  if (Array.isArray(params.audience)) throw oauthError('invalid_request', 'one audience only');
  // Only the person's ID token: a refresh token is no proof the person is at the client now.
  const { account } = await exchangeSubject(ctx, params.subject_token, params.subject_token_type, false);

  const target = exchange.audiences.find((a) => a.audience === params.audience);
  if (!target) {
    if (idJag?.audiences.some((a) => a.audience === params.audience || a.aliases.includes(params.audience))) {
      throw oauthError('invalid_request', `for ${params.audience} this IdP issues ID-JAGs (requested_token_type ${TT_ID_JAG}), not access tokens`);
    }
    throw oauthError('invalid_target', `audience ${params.audience} is not an API this IdP issues access tokens for`);
  }
  // RFC 8693 §2.1: `resource` may name the same target; any other is not one we serve.
  const unpaired = (params.resource === undefined ? [] : [params.resource].flat()).filter((r) => r !== target.audience);
  if (unpaired.length) throw oauthError('invalid_target', `resource ${unpaired.join(', ')} is not the audience ${target.audience}`);
  if (!target.clients.includes(client.clientId)) {
    throw oauthError('unauthorized_client', `client ${client.clientId} may not get access tokens for ${target.audience}`);
  }

  // The same administrator's policy as for ID-JAGs (/_control/id-jag/policy).
  const policy = idJagPolicy;
  const refusal = policyRefusal(policy, account, [target.audience], client.clientId);
  if (refusal) {
    throw oauthError(policy.error ?? 'access_denied', policy.error_description ?? `the IdP's policy refuses an access token ${refusal}`);
  }
  const granted = grantedScopes(policy, account, target.scopes, params.scope, target.audience);

  // An RFC 9068 access token whose act claim names the client acting for the person (RFC 8693 §4.1).
  const iat = epoch();
  const claims = {
    iss: issuer,
    sub: account.sub,
    aud: target.audience,
    client_id: client.clientId,
    act: { sub: client.clientId },
    ...(granted.length ? { scope: granted.join(' ') } : {}),
    iat,
    exp: iat + target.ttl,
    jti: randomBytes(16).toString('base64url'),
    ...(account.claims.email ? { email: account.claims.email } : {}),
  };
  const token = signWithCurrentKey('at+jwt', claims);
  const { header } = decodeJws(token);
  Object.assign(state, { issued: true, audience: target.audience, header, claims });
  log(`access token for ${account.username} (${account.sub}) -> ${target.audience}, acting client ${client.clientId}`
    + `${granted.length ? `, scope ${granted.join(' ')}` : ''}`);

  // RFC 8693 §2.2.1: an access token this time, hence token_type Bearer.
  ctx.body = {
    access_token: token,
    issued_token_type: TT_ACCESS_TOKEN,
    token_type: 'Bearer',
    expires_in: target.ttl,
    ...(granted.length ? { scope: granted.join(' ') } : {}),
  };
}

// --- the resource AS side: RFC 7523 jwt-bearer grant with an ID-JAG (draft §4.4) ---

// The resource's RFC 8707 indicator info, for the code flow and the jwt-bearer grant alike.
function resourceServerInfo() {
  return {
    audience: resourceServer.audience,
    scope: resourceServer.scopes.join(' '),
    accessTokenTTL: resourceServer.accessTokenTTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

// The trusted issuer's JWKS keys, fetched over loopback HTTP; cached, and fetched again when a
// kid is not among them (the issuer rotated its keys).
async function trustedIssuerKeys(trusted, kid) {
  const cached = issuerJwks.get(trusted.issuer);
  if (cached && (kid === undefined || cached.some((k) => k.kid === kid))) return cached;
  const getJson = async (url) => {
    const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
    if (!r.ok) throw new Error(`${url} answered ${r.status}`);
    return r.json();
  };
  let { jwksUri } = trusted;
  if (!jwksUri) {
    const meta = await getJson(`${trusted.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
    jwksUri = meta.jwks_uri;
  }
  const jwks = await getJson(jwksUri);
  const keys = Array.isArray(jwks?.keys) ? jwks.keys : [];
  issuerJwks.set(trusted.issuer, keys);
  return keys;
}

async function jwtBearerHandler(ctx) {
  const { provider, client } = ctx.oidc;
  const params = ctx.oidc.params;
  const accept = resourceServer.idJag;
  const state = { accepted: false, iss: null, sub: null, jti: null, client_id: null };
  ctx.state.idJag = state;
  const bad = (why) => oauthError('invalid_grant', why);

  if (!params.assertion) throw oauthError('invalid_request', 'assertion is required (RFC 7523 §2.1)');
  let decoded;
  try {
    decoded = decodeJws(params.assertion);
  } catch (e) {
    throw bad(`the assertion is not a JWT: ${e.message}`);
  }
  const { header, payload: c } = decoded;
  Object.assign(state, {
    iss: c.iss ?? null, sub: c.sub ?? null, jti: c.jti ?? null, client_id: c.client_id ?? null,
  });

  // draft §4.4.1: typ, per RFC 8725 §3.11 (the "application/" prefix may be there: RFC 7515 §4.1.9).
  const typ = String(header.typ ?? '').toLowerCase().replace(/^application\//, '');
  if (typ !== ID_JAG_TYP) throw bad(`typ ${JSON.stringify(header.typ ?? null)} is not ${ID_JAG_TYP}`);
  if (!JWS_ALGS[header.alg]) throw bad(`alg ${JSON.stringify(header.alg ?? null)} is not allowed (${Object.keys(JWS_ALGS).join(', ')})`);
  if (c.iss === issuer) throw bad('this authorization server does not accept an ID-JAG it issued itself (draft §8.3)');
  const trusted = accept.trustedIssuers.find((t) => t.issuer === c.iss);
  if (!trusted) throw bad(`iss ${JSON.stringify(c.iss ?? null)} is not a trusted issuer`);
  let keys;
  try {
    keys = await trustedIssuerKeys(trusted, header.kid);
  } catch (e) {
    throw bad(`the JWKS of ${trusted.issuer} could not be fetched: ${e.message}`);
  }
  try {
    verifyJws(decoded, keys);
  } catch (e) {
    throw bad(`signature: ${e.message} (JWKS of ${trusted.issuer})`);
  }
  // draft §4.4.1: aud is this issuer, a string or an array of exactly that one.
  if (!(c.aud === issuer || (Array.isArray(c.aud) && c.aud.length === 1 && c.aud[0] === issuer))) {
    throw bad(`aud ${JSON.stringify(c.aud ?? null)} is not this authorization server (${issuer})`);
  }
  const now = epoch();
  if (typeof c.exp !== 'number') throw bad('no exp');
  if (c.exp <= now - CLOCK_SKEW) throw bad(`the ID-JAG expired ${now - c.exp} s ago`);
  if (typeof c.iat !== 'number') throw bad('no iat');
  if (c.iat > now + CLOCK_SKEW) throw bad('iat is in the future');
  for (const name of ['sub', 'jti', 'client_id']) {
    if (typeof c[name] !== 'string' || !c[name]) throw bad(`no ${name}`);
  }
  // draft §4.4.1: client continuity.
  if (c.client_id !== client.clientId) throw bad(`client_id ${c.client_id} is not the authenticated client ${client.clientId}`);
  if (c.cnf !== undefined) throw bad('the ID-JAG is key-bound (cnf) and this server takes no proof of possession (draft §8.6.1.2.2)');
  // ext-auth §7.6.2: the resource claim names this server's resource; the scope claim its scopes.
  if (c.resource !== undefined && ![c.resource].flat().includes(resourceServer.audience)) {
    throw bad(`resource ${JSON.stringify(c.resource)} is not this server's resource ${resourceServer.audience}`);
  }
  if (params.resource !== undefined && params.resource !== resourceServer.audience) {
    throw oauthError('invalid_target', `resource ${params.resource} is not ${resourceServer.audience}`);
  }
  const inJag = typeof c.scope === 'string' ? c.scope.split(' ').filter(Boolean) : [];
  const foreign = inJag.filter((sc) => !resourceServer.scopes.includes(sc));
  if (foreign.length) throw bad(`scope ${foreign.join(' ')} is not a scope of ${resourceServer.audience}`);
  const asked = params.scope ? params.scope.split(' ').filter(Boolean) : null;
  const granted = asked ? inJag.filter((sc) => asked.includes(sc)) : inJag;
  if (asked && !granted.length) {
    throw oauthError('invalid_scope', `the ID-JAG grants none of ${asked.join(' ')} (it has: ${inJag.join(' ') || 'no scope'})`);
  }
  // ext-auth §7.4.2: each jti once per issuer, remembered until the ID-JAG's exp.
  for (const [key, exp] of usedJtis) if (exp < now - CLOCK_SKEW) usedJtis.delete(key);
  const jtiKey = `${c.iss} ${c.jti}`;
  if (usedJtis.has(jtiKey)) throw bad(`jti ${c.jti} was already used (a replayed ID-JAG)`);

  // The account (draft §4.1: each trusted issuer's subjects resolve to local accounts).
  let account;
  if (trusted.subject === 'email') {
    if (typeof c.email !== 'string') throw bad('no email claim to find the account by');
    account = byEmail(c.email);
    if (!account) throw bad(`no account with email ${c.email}`);
  } else {
    account = bySub(c.sub) ?? federatedAccounts.get(c.sub);
    if (!account) {
      account = {
        username: c.sub, password: '', disabled: false, sub: c.sub,
        claims: typeof c.email === 'string' ? { email: c.email } : {},
      };
      federatedAccounts.set(c.sub, account);
      log(`new account ${c.sub} from an ID-JAG of ${c.iss}`);
    }
  }
  if (account.disabled) throw bad(`the account ${account.username} is disabled`);
  usedJtis.set(jtiKey, c.exp);

  // The same RFC 9068 JWT access token as the code flow's, for the resource.
  const scope = granted.join(' ') || undefined;
  const at = new provider.AccessToken({ accountId: account.sub, client, gty: JWT_BEARER, scope });
  at.resourceServer = new provider.ResourceServer(resourceServer.audience, resourceServerInfo());
  let refreshToken;
  if (accept.refreshToken && client.grantTypeAllowed('refresh_token')) {
    const grant = new provider.Grant({ accountId: account.sub, clientId: client.clientId });
    if (scope) grant.addResourceScope(resourceServer.audience, scope);
    at.grantId = await grant.save();
    refreshToken = await new provider.RefreshToken({
      accountId: account.sub, client, grantId: at.grantId, gty: JWT_BEARER, resource: resourceServer.audience,
      rotations: 0, scope, expiresWithSession: false,
    }).save();
  }
  const accessToken = await at.save();
  Object.assign(state, {
    accepted: true, account: account.sub, scope: scope ?? null, refresh_token: Boolean(refreshToken),
  });
  log(`id-jag of ${c.iss} accepted: ${c.sub} as ${account.sub}, client ${client.clientId}${scope ? `, scope ${scope}` : ''}`);
  ctx.body = {
    access_token: accessToken,
    token_type: at.tokenType,
    expires_in: at.expiration,
    ...(scope ? { scope } : {}),
    ...(refreshToken ? { refresh_token: refreshToken } : {}),
  };
}

// --- the provider ---------------------------------------------------------------------------

const cookieKeys = [randomBytes(32).toString('hex')];
const ttl = {
  AccessToken: 3600,
  AuthorizationCode: 60,
  IdToken: 3600,
  RefreshToken: 14 * 24 * 3600,
  Session: 14 * 24 * 3600,
  Grant: 14 * 24 * 3600,
  Interaction: 3600,
  ...(config.ttl ?? {}),
};
if (resourceServer) {
  // The resource's own lifetime for its JWTs; other access tokens keep ttl.AccessToken.
  const fallback = ttl.AccessToken;
  ttl.AccessToken = (ctx, token, client) => token.resourceServer?.accessTokenTTL
    ?? (typeof fallback === 'function' ? fallback(ctx, token, client) : fallback);
}

// RFC 8707 / RFC 9068: the one resource this provider issues JWT access tokens for.
function resourceIndicators() {
  if (!resourceServer) return {};
  return {
    resourceIndicators: {
      enabled: true,
      // No `resource` in the request: the audience, as GitHub/Linear issue for their only API.
      defaultResource: async (ctx, client, oneOf) => oneOf ?? resourceServer.audience,
      // The refresh grant keeps issuing for the granted resource without being told again.
      useGrantedResource: async () => true,
      async getResourceServerInfo(ctx, indicator) {
        if (indicator !== resourceServer.audience) throw new errors.InvalidTarget();
        return resourceServerInfo();
      },
    },
  };
}

// RFC 7591: open registration (no initial access token) at /reg, in discovery as
// registration_endpoint. A registration access token (RFC 7592 read: GET /reg/<client_id>) is
// issued too; update and delete are not enabled.
function registration() {
  if (!resourceServer?.registration) return {};
  return { registration: { enabled: true, initialAccessToken: false, issueRegistrationAccessToken: true } };
}

// oidc-provider accepts in a client's `scope` metadata only its own (OIDC) scopes, and checks a
// client's allow-list against those only; resource scopes are always allowed. So the resource's
// scopes are taken out of a registration's `scope` before oidc-provider sees it and put back
// into the answer: clientId -> the `scope` the client registered.
const registeredScope = new Map();
const OIDC_SCOPES = ['openid', 'offline_access', 'email', 'profile', 'groups'];

const PROFILE = ['name', 'preferred_username', 'given_name', 'family_name'];

function buildProvider() {
  const extraClaimNames = new Set();
  for (const a of accounts.values()) {
    for (const k of Object.keys(a.claims)) {
      if (!['email', 'email_verified', 'groups', ...PROFILE].includes(k)) extraClaimNames.add(k);
    }
  }
  const provider = new Provider(issuer, {
    adapter: Store,
    clients,
    jwks: { keys: signingKeys.map((k) => ({ ...k })) },
    cookies: { keys: cookieKeys },
    claims: {
      // acr/amr/auth_time of the login in every ID token, as corporate IdPs do.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: [...PROFILE, ...extraClaimNames],
      groups: ['groups'],
      sid: null,
      iss: null,
    },
    scopes: OIDC_SCOPES,
    responseTypes: ['code'],
    acrValues: ['urn:doorman-test:pwd'],
    // conform_id_token_claims: true leaves oidc-provider's default (scope claims such as email only
    // from the UserInfo endpoint when an access token is issued).
    conformIdTokenClaims: config.conform_id_token_claims === true,
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      id_token_signed_response_alg: 'RS256',
      token_endpoint_auth_method: 'client_secret_basic',
      // OIDC parameters need the openid scope; a resource's client may ask for "notes:read" alone.
      require_auth_time: !resourceServer,
    },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
      rpInitiatedLogout: { enabled: false },
      ...resourceIndicators(),
      ...registration(),
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl,
    rotateRefreshToken: true,
    async issueRefreshToken(ctx, client, source) {
      // GitHub/Linear style (always_refresh): a refresh token without any OIDC scope.
      return client.grantTypeAllowed('refresh_token')
        && (source.scopes.has('offline_access') || Boolean(resourceServer?.alwaysRefresh));
    },
    async expiresWithSession(ctx, source) {
      return !source.scopes.has('offline_access') && !resourceServer?.alwaysRefresh;
    },
    async findAccount(ctx, sub) {
      const a = bySub(sub) ?? federatedAccounts.get(sub);
      if (!a || a.disabled) return undefined;
      return {
        accountId: a.sub,
        async claims() {
          const now = bySub(sub) ?? a; // claims changed by /_control/accounts show at once
          return { sub: now.sub, preferred_username: now.username, ...now.claims };
        },
      };
    },
    async loadExistingGrant(ctx) {
      const { oidc } = ctx;
      const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
      let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
      const autoConsents = autoConsent.has(oidc.client.clientId)
        || (resourceServer?.registration?.skipConsent && registeredScope.has(oidc.client.clientId));
      if (autoConsents && oidc.session.accountId) {
        // A first-party app: consent is implied for whatever it asks.
        grant ||= new oidc.provider.Grant({ clientId: oidc.client.clientId, accountId: oidc.session.accountId });
        grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
        const claims = [...oidc.requestParamClaims];
        if (claims.length) grant.addOIDCClaims(claims);
        for (const [indicator, server] of Object.entries(oidc.resourceServers ?? {})) {
          const scopes = [...oidc.requestParamScopes].filter((s) => server.scopes.has(s));
          if (scopes.length) grant.addResourceScope(indicator, scopes.join(' '));
        }
        await grant.save();
      }
      return grant;
    },
    async renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Something went wrong', `
        <h1>Something went wrong</h1>
        <p class="error" role="alert">${esc(out.error)}: ${esc(out.error_description ?? '')}</p>`);
    },
  });

  // The ID-JAG grants (see the header): RFC 8693 token exchange at the IdP (also for on-behalf-of
  // access tokens, config `exchange`), RFC 7523 jwt-bearer at a resource AS. `resource` and
  // `audience` may repeat in a token exchange (RFC 8693 §2.1).
  if (idJag || exchange) {
    provider.registerGrantType(TOKEN_EXCHANGE, tokenExchangeHandler, ['requested_token_type', 'subject_token',
      'subject_token_type', 'actor_token', 'actor_token_type', 'audience', 'resource', 'scope'], ['audience', 'resource']);
  }
  if (resourceServer?.idJag) {
    provider.registerGrantType(JWT_BEARER, jwtBearerHandler, ['assertion', 'scope', 'resource']);
  }

  provider.use(async (ctx, next) => {
    await next();
    const route = ctx.oidc?.route;
    if (route === 'registration' && ctx.status === 201 && ctx.body?.client_id) {
      const asked = ctx.req.registrationBody?.scope;
      registeredScope.set(ctx.body.client_id, typeof asked === 'string' ? asked : null);
      if (typeof asked === 'string') ctx.body = { ...ctx.body, scope: asked };
      log(`registered client ${ctx.body.client_id} (${ctx.body.token_endpoint_auth_method}, `
        + `${JSON.stringify(ctx.body.redirect_uris)})`);
    }
    if (route === 'client' && ctx.status === 200 && registeredScope.get(ctx.body?.client_id)) {
      ctx.body = { ...ctx.body, scope: registeredScope.get(ctx.body.client_id) };
    }
    if (['authorization', 'resume', 'token', 'userinfo', 'jwks', 'discovery', 'revocation', 'registration',
      'client'].includes(route)) {
      const raw = route === 'token' || route === 'revocation' ? (ctx.oidc?.params ?? ctx.request.body) : null;
      let params = raw ? masked(raw) : masked(route === 'authorization' ? ctx.query : {});
      if ((route === 'token' || route === 'revocation') && ctx.oidc?.client) params.client_id = ctx.oidc.client.clientId;
      const entry = { method: ctx.method, path: ctx.req.originalPath ?? ctx.path, route, status: ctx.status, params };
      if (route === 'registration') {
        // The client metadata as sent (secrets masked) and the client_id it got, if any.
        entry.params = params = masked(ctx.req.registrationBody ?? ctx.oidc?.body ?? {});
        entry.client_id = ctx.status === 201 ? ctx.body?.client_id ?? null : null;
        if (ctx.status !== 201) entry.error = ctx.body?.error ?? null;
      }
      if (route === 'client') entry.client_id = ctx.params?.clientId ?? null;
      if (route === 'token' && ctx.state.idJag) {
        // What the ID-JAG grant decided (see /_control/requests in the header).
        entry.id_jag = { ...ctx.state.idJag };
        if (ctx.status !== 200) {
          Object.assign(entry.id_jag, { error: ctx.body?.error ?? null, error_description: ctx.body?.error_description ?? null });
        }
      }
      if (route === 'token' && ctx.state.exchange) {
        // What the on-behalf-of exchange decided (config `exchange`).
        entry.exchange = { ...ctx.state.exchange };
        if (ctx.status !== 200) {
          Object.assign(entry.exchange, { error: ctx.body?.error ?? null, error_description: ctx.body?.error_description ?? null });
        }
      }
      logRequest(entry);
      if (route === 'revocation') {
        revocations.push({
          client_id: params.client_id ?? null,
          token_type_hint: raw?.token_type_hint ?? null,
          status: ctx.status,
          token_sha256_prefix: raw?.token ? sha256Prefix(raw.token) : null,
        });
        if (revocations.length > 500) revocations.shift();
      }
    }
    if (route === 'discovery' && resourceServer && ctx.body?.scopes_supported) {
      ctx.body = { ...ctx.body, scopes_supported: [...new Set([...ctx.body.scopes_supported, ...resourceServer.scopes])] };
    }
    if (route === 'discovery' && ctx.status === 200 && ctx.body && (idJag || resourceServer?.idJag)) {
      // draft §7: what an IdP issues by token exchange; which grant profiles a resource AS takes
      // (never which issuers it trusts: draft §8.4).
      ctx.body = {
        ...ctx.body,
        ...(idJag ? { identity_chaining_requested_token_types_supported: [TT_ID_JAG] } : {}),
        ...(resourceServer?.idJag ? { authorization_grant_profiles_supported: [ID_JAG_PROFILE] } : {}),
      };
    }
    if (route === 'token' && ctx.status === 200 && ctx.body?.id_token && idTokenChanges.length) {
      ctx.body = { ...ctx.body, id_token: rewriteJws(ctx.body.id_token, idTokenChanges.shift()) };
    }
  });

  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error',
    'introspection.error', 'revocation.error', 'registration_create.error']) {
    provider.on(event, (...args) => {
      const err = args.find((a) => a instanceof Error);
      log(`${event}: ${err ? `${err.name}: ${err.message}${err.error_description ? ` - ${err.error_description}` : ''}${err.error_detail ? ` (${err.error_detail})` : ''}` : ''}`);
    });
  }
  return provider;
}

let provider = buildProvider();
let handler = provider.callback();

// --- pages ----------------------------------------------------------------------------------

function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} · Example Corp SSO</title>
<style>
  :root { color-scheme: light; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Liberation Sans", sans-serif;
         background: #eef1f5; color: #1c2430; }
  header { background: #0b3d91; color: #fff; padding: 14px 24px; font-weight: 600; letter-spacing: .02em; }
  main { max-width: 380px; margin: 48px auto; background: #fff; border-radius: 10px; padding: 28px 32px;
         box-shadow: 0 1px 3px rgba(0,0,0,.12), 0 8px 24px rgba(0,0,0,.06); }
  h1 { font-size: 1.35rem; margin: 0 0 12px; }
  label { display: block; font-weight: 600; margin: 14px 0 4px; font-size: .95rem; }
  input[type=text], input[type=password] { width: 100%; box-sizing: border-box; padding: 10px 12px;
         border: 1px solid #9aa5b5; border-radius: 6px; font-size: 1rem; }
  input:focus, button:focus { outline: 3px solid #7aa7ff; outline-offset: 1px; }
  .actions { display: flex; gap: 10px; margin-top: 22px; }
  button { flex: 1; padding: 10px 14px; font-size: 1rem; border-radius: 6px; cursor: pointer;
           border: 1px solid #0b3d91; background: #fff; color: #0b3d91; font-weight: 600; }
  button.primary { background: #0b3d91; color: #fff; }
  .error { background: #fdecec; color: #8a1010; border: 1px solid #f3b4b4; padding: 8px 12px; border-radius: 6px; }
  .muted { color: #566173; font-size: .95rem; }
  ul { padding-left: 20px; }
</style></head>
<body><header>Example Corp · Single sign-on</header><main>${body}</main></body></html>`;
}

function loginPage(uid, { username = '', error, clientName } = {}) {
  return page('Sign in', `
  <h1>Sign in to Example Corp</h1>
  ${clientName ? `<p class="muted">to continue to <strong>${esc(clientName)}</strong></p>` : ''}
  ${error ? `<p class="error" role="alert">${esc(error)}</p>` : ''}
  <form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
    <label for="username">Username</label>
    <input type="text" id="username" name="username" value="${esc(username)}" autocomplete="username" required ${username ? '' : 'autofocus'}>
    <label for="password">Password</label>
    <input type="password" id="password" name="password" autocomplete="current-password" required ${username ? 'autofocus' : ''}>
    <div class="actions"><button type="submit" class="primary">Sign in</button></div>
  </form>`);
}

const SCOPE_TEXT = {
  openid: 'Know who you are',
  email: 'See your email address',
  profile: 'See your name',
  groups: 'See the groups you belong to',
  offline_access: 'Keep access while you are away',
};

function consentPage(uid, { clientName, scopes }) {
  return page('Allow access', `
  <h1>Allow ${esc(clientName)}?</h1>
  <p class="muted"><strong>${esc(clientName)}</strong> asks to:</p>
  <ul>${scopes.map((s) => `<li>${esc(SCOPE_TEXT[s] ?? s)}</li>`).join('')}</ul>
  <form method="post" action="/interaction/${esc(uid)}/consent">
    <div class="actions">
      <button type="submit" name="decision" value="deny">Deny</button>
      <button type="submit" name="decision" value="allow" class="primary">Allow</button>
    </div>
  </form>`);
}

function send(res, status, body, type = 'text/html; charset=utf-8') {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

const sendJson = (res, status, value) => send(res, status, `${JSON.stringify(value)}\n`, 'application/json');

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

async function interaction(req, res, path) {
  const [, , uid, action] = path.split('/'); // /interaction/<uid>[/<action>]
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (e) {
    send(res, 400, page('Sign-in expired', `<h1>This sign-in has expired</h1>
      <p class="muted">Go back to the application and start again.</p>`));
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, page('Sign-in expired', '<h1>This sign-in has expired</h1>'));
    return;
  }
  const { prompt, params } = details;
  const client = await provider.Client.find(params.client_id);
  const clientName = client?.clientName ?? params.client_id;
  const form = req.method === 'POST' ? new URLSearchParams(await readBody(req)) : null;

  if (!action && req.method === 'GET') {
    if (prompt.name === 'login') {
      send(res, 200, loginPage(uid, { username: params.login_hint ?? '', clientName }));
    } else if (prompt.name === 'consent') {
      const scopes = String(params.scope ?? '').split(' ').filter(Boolean);
      send(res, 200, consentPage(uid, { clientName, scopes }));
    } else {
      send(res, 501, page('Not supported', `<h1>Unsupported prompt ${esc(prompt.name)}</h1>`));
    }
    return;
  }

  if (action === 'login' && form && prompt.name === 'login') {
    const username = form.get('username') ?? '';
    const a = accounts.get(username);
    if (!a || a.disabled || !sameSecret(a.password, form.get('password') ?? '')) {
      log(`login refused for ${JSON.stringify(username)}`);
      send(res, 401, loginPage(uid, { username, error: 'Incorrect username or password.', clientName }));
      return;
    }
    log(`login ${username} (${a.sub})`);
    await provider.interactionFinished(req, res, {
      login: { accountId: a.sub, amr: ['pwd'], acr: 'urn:doorman-test:pwd', remember: true },
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (action === 'consent' && form && prompt.name === 'consent') {
    if (form.get('decision') !== 'allow') {
      await provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'The person denied the request',
      }, { mergeWithLastSubmission: false });
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  send(res, 400, page('Unexpected request', '<h1>Unexpected request</h1><p class="muted">Start again from the application.</p>'));
}

// --- control endpoints ----------------------------------------------------------------------

async function control(req, res, path) {
  const body = req.method === 'POST' ? await readBody(req) : '';
  const json = body ? JSON.parse(body) : {};
  const parts = path.split('/').filter(Boolean); // ['_control', ...]

  if (req.method === 'GET' && path === '/_control/accounts') {
    sendJson(res, 200, [...accounts.values()].map(publicAccount));
  } else if (req.method === 'POST' && path === '/_control/accounts') {
    const before = accounts.get(json.username);
    const a = putAccount(json);
    if (before && before.sub !== a.sub) revokeAccount(before.sub);
    if (a.disabled) revokeAccount(a.sub);
    sendJson(res, 200, publicAccount(a));
  } else if (req.method === 'POST' && parts[1] === 'accounts' && parts.length === 4
    && ['disable', 'enable'].includes(parts[3])) {
    const a = accounts.get(decodeURIComponent(parts[2]));
    if (!a) {
      sendJson(res, 404, { error: 'no such account' });
      return;
    }
    if (parts[3] === 'disable') {
      a.disabled = true;
      const revoked = revokeAccount(a.sub);
      log(`disabled ${a.username}: ${revoked} grant(s) revoked`);
      sendJson(res, 200, { ...publicAccount(a), revoked_grants: revoked });
    } else {
      a.disabled = false;
      log(`enabled ${a.username}`);
      sendJson(res, 200, publicAccount(a));
    }
  } else if (req.method === 'POST' && path === '/_control/rotate-keys') {
    const fresh = [newKey('RS256'), newKey('ES256')];
    signingKeys = json.keep_previous === false ? fresh : [...fresh, ...signingKeys];
    provider = buildProvider();
    handler = provider.callback();
    log(`keys rotated: now signing with ${fresh.map((k) => k.kid).join(', ')}`);
    const jwks = await (await fetch(`${issuer}/jwks`)).json();
    sendJson(res, 200, { kids: fresh.map((k) => k.kid), jwks });
  } else if (req.method === 'POST' && path === '/_control/next-id-token') {
    idTokenChanges.push(json);
    sendJson(res, 200, { queued: idTokenChanges.length, unpublished_kid: unpublishedKey.kid });
  } else if (req.method === 'POST' && path === '/_control/next-id-jag') {
    idJagChanges.push(json);
    sendJson(res, 200, { queued: idJagChanges.length, unpublished_kid: unpublishedKey.kid });
  } else if (path === '/_control/id-jag/policy' && ['GET', 'POST'].includes(req.method)) {
    if (req.method === 'POST') {
      const problem = idJagPolicyProblem(json);
      if (problem) {
        sendJson(res, 400, { error: problem });
        return;
      }
      idJagPolicy = json;
      log(`id-jag policy: ${JSON.stringify(json)}`);
    }
    sendJson(res, 200, idJagPolicy);
  } else if (req.method === 'POST' && path === '/_control/fail') {
    const status = json.status ?? 503;
    failures.push({
      path: json.path,
      status,
      times: json.times ?? 1,
      grant_type: json.grant_type ?? null,
      error: json.error ?? (status >= 500 ? 'temporarily_unavailable' : 'invalid_grant'),
      error_description: json.error_description ?? 'injected failure',
    });
    sendJson(res, 200, { queued: failures.length });
  } else if (req.method === 'GET' && path === '/_control/clients') {
    // Dynamically registered clients (RFC 7591) as stored, oldest first; no secrets.
    const out = [];
    for (const [key, entry] of store) {
      if (!key.startsWith('Client:')) continue;
      const { client_secret: secret, ...metadata } = entry.payload;
      const asked = registeredScope.get(metadata.client_id);
      out.push({ ...metadata, ...(asked ? { scope: asked } : {}), has_secret: Boolean(secret) });
    }
    sendJson(res, 200, out);
  } else if (req.method === 'GET' && path === '/_control/requests') {
    sendJson(res, 200, requests);
  } else if (req.method === 'GET' && path === '/_control/revocations') {
    sendJson(res, 200, { count: revocations.length, revocations });
  } else if (req.method === 'POST' && path === '/_control/reset-requests') {
    requests.length = 0;
    revocations.length = 0;
    sendJson(res, 200, {});
  } else {
    sendJson(res, 404, { error: 'no such control endpoint' });
  }
}

// --- the server -----------------------------------------------------------------------------

const ROUTES = { '/auth': 'authorization', '/token': 'token', '/token/revocation': 'revocation', '/me': 'userinfo',
  '/jwks': 'jwks', '/.well-known/openid-configuration': 'discovery',
  '/.well-known/oauth-authorization-server': 'discovery', '/reg': 'registration' };

// Answers the request with a queued /_control/fail failure if one matches; true if it did.
async function injectedFailure(req, res, pathname) {
  const queued = failures.filter((f) => f.path === pathname && f.times > 0);
  if (!queued.length) return false;
  let params = Object.fromEntries(new URL(req.url, issuer).searchParams);
  if (req.method === 'POST') {
    // Read the form to match grant_type; oidc-provider falls back to req.body when the
    // stream is spent, so a request that does not match still reaches it intact.
    const raw = await readBody(req);
    req.body = raw;
    if (/json/i.test(req.headers['content-type'] ?? '')) {
      try {
        const json = JSON.parse(raw);
        params = json && typeof json === 'object' && !Array.isArray(json) ? json : {};
      } catch {
        params = {};
      }
    } else {
      params = Object.fromEntries(new URLSearchParams(raw));
    }
  }
  const failure = queued.find((f) => !f.grant_type || f.grant_type === params.grant_type);
  if (!failure) return false;
  const basic = /^Basic (.+)$/i.exec(req.headers.authorization ?? '');
  if (basic && !params.client_id) {
    params.client_id = decodeURIComponent(Buffer.from(basic[1], 'base64').toString('utf8').split(':')[0]);
  }
  failure.times -= 1;
  if (failure.times === 0) failures.splice(failures.indexOf(failure), 1);
  const route = ROUTES[pathname] ?? null;
  logRequest({ method: req.method, path: pathname, route, status: failure.status, params: masked(params), injected: true });
  if (route === 'revocation') {
    revocations.push({ client_id: params.client_id ?? null, token_type_hint: params.token_type_hint ?? null,
      status: failure.status, token_sha256_prefix: params.token ? sha256Prefix(params.token) : null, injected: true });
  }
  sendJson(res, failure.status, { error: failure.error, error_description: failure.error_description });
  return true;
}

// Reads a registration request and hands oidc-provider the same JSON without the resource's
// scopes in `scope` (see registeredScope); the original stays on req.registrationBody for the
// log and the answer. Anything not a JSON object goes through unchanged for oidc-provider to refuse.
async function prepareRegistration(req) {
  const raw = req.readable ? await readBody(req) : String(req.body ?? '');
  req.body = raw;
  let body;
  try {
    body = JSON.parse(raw);
  } catch {
    return;
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) return;
  req.registrationBody = body;
  if (typeof body.scope === 'string') {
    const kept = body.scope.split(' ').filter((s) => s && !resourceServer.scopes.includes(s));
    const forProvider = { ...body };
    if (kept.length) forProvider.scope = kept.join(' ');
    else delete forProvider.scope;
    req.body = JSON.stringify(forProvider);
  }
}

const server = http.createServer(async (req, res) => {
  const { pathname } = new URL(req.url, issuer);
  try {
    if (pathname === '/healthz') {
      sendJson(res, 200, { ok: true });
      return;
    }
    if (pathname.startsWith('/_control/')) {
      await control(req, res, pathname);
      return;
    }
    if (await injectedFailure(req, res, pathname)) return;
    if (resourceServer && pathname === '/auth' && req.method === 'GET') {
      // A resource's client asking for offline_access expects a refresh token without knowing
      // oidc-provider wants prompt=consent for it (see the header).
      const url = new URL(req.url, issuer);
      if (!url.searchParams.has('prompt')
        && (url.searchParams.get('scope') ?? '').split(' ').includes('offline_access')) {
        url.searchParams.set('prompt', 'consent');
        req.url = `${url.pathname}${url.search}`;
      }
    }
    if (resourceServer && pathname === '/.well-known/oauth-authorization-server') {
      // RFC 8414 metadata: the same document as OIDC discovery (the issuer has no path).
      req.originalPath = pathname;
      req.url = '/.well-known/openid-configuration';
    }
    if (resourceServer?.registration && pathname === '/reg' && req.method === 'POST') {
      await prepareRegistration(req);
    }
    if (pathname.startsWith('/interaction/')) {
      await interaction(req, res, pathname);
      return;
    }
    handler(req, res);
  } catch (e) {
    log(`error on ${req.method} ${pathname}: ${e.stack ?? e}`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error' });
    else res.end();
  }
});

server.listen(port, '127.0.0.1', () => log(`listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => { server.closeAllConnections(); process.exit(0); });
}
