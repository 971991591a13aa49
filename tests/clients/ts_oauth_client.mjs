#!/usr/bin/env node
// An MCP client on the TypeScript SDK 1.32.2 (stateful revision, 2025-11-25) that signs in with
// OAuth: its OAuthClientProvider registers dynamically, sends the person to the authorization
// URL, receives the code on its own loopback callback server, finishes the flow, and then uses
// the MCP server. The person's browser is driven by whoever runs this script (the test).
//
//   tests/peers/node_modules/.bin/node tests/clients/ts_oauth_client.mjs <mcp-url>
//
// Talks in JSON lines. On stdout, one object per line, each with an "event":
//   {"event":"authorize","url":..., "redirectUrl":...}   open this URL in a browser; the browser's
//       final redirect must reach redirectUrl (this script's callback server) with code/state/iss
//   {"event":"connected", serverInfo, protocolVersion, sessionId, tools, call, callback, clientInformation, tokens,
//       authorizeCount, reauthorized}   reauthorized: as for "again", when the first call had the SDK
//       authorize again (the server's re-authorization cascade), else null
//   {"event":"again", call, sessionId, tokens, authorizeCount, invalidations, reauthorized}
//       after the command "again"; if the SDK had to sign in again, an "authorize" event comes
//       first and "reauthorized" describes the callback
//   {"event":"done"}
// On stdin, one command per line: "again" (call the tool once more: lets the test expire the
// access token first, so the SDK must refresh), "quit" (end the session and exit 0).
// Knobs (env): TS_TOOL (py_add), TS_TOOL_ARGS ({"a":2,"b":3}), TS_CLIENT_NAME, TS_TIMEOUT_MS (30000).
// Any failure: message on stderr, exit 1.

import http from "node:http";
import readline from "node:readline";

import { Client } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/index.js";
import { StreamableHTTPClientTransport } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/streamableHttp.js";
import { UnauthorizedError } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/auth.js";

const env = process.env;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

/** A loopback HTTP server that takes exactly the redirects sent to /callback. */
function startCallbackServer() {
  const waiting = [];
  const arrived = [];
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname !== "/callback") {
      res.writeHead(404).end("not found");
      return;
    }
    const params = url.searchParams;
    const got = {
      code: params.get("code"),
      state: params.get("state"),
      iss: params.get("iss"),
      error: params.get("error"),
      error_description: params.get("error_description"),
      codeCount: params.getAll("code").length,
    };
    res.writeHead(200, { "content-type": "text/plain" }).end("Signed in. You can close this page.");
    const w = waiting.shift();
    if (w) w(got);
    else arrived.push(got);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      resolve({
        server,
        redirectUrl: `http://127.0.0.1:${server.address().port}/callback`,
        next: () => (arrived.length ? Promise.resolve(arrived.shift()) : new Promise((r) => waiting.push(r))),
      });
    });
  });
}

/** Waits for the browser to come back to the callback; checks state; returns what came. */
async function signedIn(callback, provider) {
  const got = await callback.next();
  const seen = {
    stateMatches: got.state === provider.states[provider.states.length - 1],
    iss: got.iss,
    error: got.error,
    codeCount: got.codeCount,
    code: got.code,
  };
  if (got.error) throw new Error(`authorization failed: ${got.error} ${got.error_description ?? ""}`);
  if (!seen.stateMatches) throw new Error(`state mismatch: ${got.state}`);
  return seen;
}

/** Calls a tool; when the server answers 401 and the SDK cannot refresh, it sends the person
 * to authorize again ("authorize" event): waits for that, finishes it, and calls once more. */
async function callWithReauth(client, transport, callback, provider, name, args, opts) {
  try {
    return { call: await client.callTool({ name, arguments: args }, undefined, opts), reauthorized: null };
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    const reauthorized = await signedIn(callback, provider);
    await transport.finishAuth(reauthorized.code);
    delete reauthorized.code;
    return { call: await client.callTool({ name, arguments: args }, undefined, opts), reauthorized };
  }
}

/** An in-memory OAuthClientProvider that hands the authorization URL to the test. */
class HeadlessProvider {
  constructor(redirectUrl) {
    this._redirectUrl = redirectUrl;
    this._clientInformation = undefined;
    this._tokens = undefined;
    this._codeVerifier = undefined;
    this.savedTokens = [];
    this.states = [];
    this.authorizeCount = 0;
    this.invalidations = [];
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: env.TS_CLIENT_NAME || "doorman-ts-oauth-client",
      redirect_uris: [this._redirectUrl],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    const s = `ts-${Math.random().toString(36).slice(2)}-${Date.now()}`;
    this.states.push(s);
    return s;
  }
  clientInformation() {
    return this._clientInformation;
  }
  saveClientInformation(info) {
    this._clientInformation = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }
  redirectToAuthorization(url) {
    this.authorizeCount += 1;
    emit({ event: "authorize", url: url.toString(), redirectUrl: this._redirectUrl });
  }
  invalidateCredentials(scope) {
    // The SDK calls this when the server says the credentials are no longer good (e.g. a refresh
    // answered invalid_grant): forget them, so it signs in again.
    this.invalidations.push(scope);
    if (scope === "all" || scope === "client") this._clientInformation = undefined;
    if (scope === "all" || scope === "tokens") this._tokens = undefined;
    if (scope === "all" || scope === "verifier") this._codeVerifier = undefined;
  }
  saveCodeVerifier(v) {
    this._codeVerifier = v;
  }
  codeVerifier() {
    if (!this._codeVerifier) throw new Error("no code verifier saved");
    return this._codeVerifier;
  }
}

function stdinCommands() {
  const rl = readline.createInterface({ input: process.stdin });
  const queue = [];
  const waiting = [];
  rl.on("line", (line) => {
    const cmd = line.trim();
    if (!cmd) return;
    const w = waiting.shift();
    if (w) w(cmd);
    else queue.push(cmd);
  });
  rl.on("close", () => {
    for (const w of waiting.splice(0)) w("quit");
    queue.push("quit");
  });
  return { next: () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiting.push(r))), rl };
}

async function main() {
  const url = process.argv[2];
  if (!url) throw new Error("usage: ts_oauth_client.mjs <mcp-url>");
  const opts = { timeout: Number(env.TS_TIMEOUT_MS || 30000) };
  const tool = env.TS_TOOL || "py_add";
  const toolArgs = env.TS_TOOL_ARGS ? JSON.parse(env.TS_TOOL_ARGS) : { a: 2, b: 3 };

  const callback = await startCallbackServer();
  const provider = new HeadlessProvider(callback.redirectUrl);
  const commands = stdinCommands();

  // First attempt: the server answers 401, the SDK discovers, registers and redirects.
  let transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  let client = new Client({ name: "doorman-ts-oauth-client", version: "1.0.0" });
  let callbackSeen = null;
  try {
    await client.connect(transport, opts);
    throw new Error("the server let an unauthenticated client in");
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    callbackSeen = await signedIn(callback, provider);
    await transport.finishAuth(callbackSeen.code);
    delete callbackSeen.code;
  }
  await client.close().catch(() => {});

  // Second attempt with the tokens the provider now holds.
  transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  client = new Client({ name: "doorman-ts-oauth-client", version: "1.0.0" });
  await client.connect(transport, opts);
  try {
    const tools = (await client.listTools(undefined, opts)).tools.map((t) => t.name);
    const first = await callWithReauth(client, transport, callback, provider, tool, toolArgs, opts);
    emit({
      event: "connected",
      serverInfo: client.getServerVersion() ?? null,
      protocolVersion: transport.protocolVersion ?? null,
      sessionId: transport.sessionId ?? null,
      tools,
      call: first.call,
      callback: callbackSeen,
      clientInformation: provider.clientInformation() ?? null,
      tokens: provider.savedTokens,
      authorizeCount: provider.authorizeCount,
      reauthorized: first.reauthorized,
      invalidations: provider.invalidations,
    });

    for (;;) {
      const cmd = await commands.next();
      if (cmd === "quit") break;
      if (cmd === "again") {
        // The SDK may not be able to refresh, and send the person to sign in again.
        const { call: again, reauthorized } = await callWithReauth(client, transport, callback, provider, tool, toolArgs, opts);
        emit({
          event: "again",
          call: again,
          sessionId: transport.sessionId ?? null,
          tokens: provider.savedTokens,
          authorizeCount: provider.authorizeCount,
          invalidations: provider.invalidations,
          reauthorized,
        });
      } else {
        throw new Error(`unknown command ${cmd}`);
      }
    }
  } finally {
    await transport.terminateSession().catch((e) => console.error(`terminateSession: ${e.message ?? e}`));
    await client.close().catch(() => {});
    commands.rl.close();
    callback.server.close();
  }
  emit({ event: "done" });
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err?.stack || String(err));
    process.exit(1);
  },
);
