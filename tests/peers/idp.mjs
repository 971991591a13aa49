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
//       "registration": true             // optional: open RFC 7591 registration at /reg; or
//     }                                  //   {"skip_consent": true}: its clients see no consent page
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
//        (claims merged, `remove`d claims dropped, header fields merged; "unpublished" signs
//        with an RS256 key that is never in the JWKS; tamper_signature flips the signature).
//        For negative tests: wrong nonce/aud/azp/iss, expired, unknown kid, bad signature.
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
//   GET  /_control/clients                   dynamically registered clients as stored, oldest
//        first: their metadata (scope as registered) and has_secret; never the secret.
//   GET  /_control/revocations               {"count": N, "revocations": [{client_id,
//        token_type_hint, status, token_sha256_prefix}]}: every revocation request, oldest first;
//        token_sha256_prefix is the first 12 hex digits of SHA-256 of the token (never the token).
//   POST /_control/reset-requests            empties both logs

import { createHash, generateKeyPairSync, randomBytes, sign as cryptoSign } from 'node:crypto';
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
const resourceServer = readResourceServer(config.resource_server);

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
  };
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
const clients = (config.clients ?? []).map(({ skip_consent: skip, ...c }) => {
  if (skip) autoConsent.add(c.client_id);
  return { grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], ...c };
});

// --- control state --------------------------------------------------------------------------

const idTokenChanges = []; // queued /_control/next-id-token bodies
const failures = []; // {path, status, times, grant_type, error, error_description}
const requests = [];
const revocations = []; // {client_id, token_type_hint, status, token_sha256_prefix}
const MASKED = new Set(['code', 'code_verifier', 'refresh_token', 'client_secret', 'token',
  'client_assertion', 'password', 'registration_access_token', 'initial_access_token']);

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

function rewriteIdToken(idToken, change) {
  const [h, p] = idToken.split('.');
  const header = { ...JSON.parse(Buffer.from(h, 'base64url')), ...(change.header ?? {}) };
  const payload = { ...JSON.parse(Buffer.from(p, 'base64url')), ...(change.claims ?? {}) };
  for (const claim of change.remove ?? []) delete payload[claim];
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
        return {
          audience: resourceServer.audience,
          scope: resourceServer.scopes.join(' '),
          accessTokenTTL: resourceServer.accessTokenTTL,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
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
      const a = bySub(sub);
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
    if (route === 'token' && ctx.status === 200 && ctx.body?.id_token && idTokenChanges.length) {
      ctx.body = { ...ctx.body, id_token: rewriteIdToken(ctx.body.id_token, idTokenChanges.shift()) };
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
