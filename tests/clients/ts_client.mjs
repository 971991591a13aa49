#!/usr/bin/env node
// MCP client smoke run on the TypeScript SDK 1.32.2 (legacy initialize handshake).
//
//   tests/peers/node_modules/.bin/node tests/clients/ts_client.mjs <mcp-url>
//
// Runs a fixed sequence and prints ONE JSON object on stdout:
//   {serverInfo, protocolVersion, sessionId, tools, echo, progress:{result, notifications},
//    resources, read, prompts, prompt}
// Knobs (env): TS_ECHO_TOOL (echo), TS_PROGRESS_TOOL (trigger-long-running-operation),
//   TS_PROGRESS_ARGS ({"duration":1,"steps":3}), TS_RESOURCE_URI (first listed resource),
//   TS_PROMPT_NAME (simple-prompt), TS_PROMPT_ARGS ({}), TS_HEADERS (JSON object of extra
//   HTTP headers, e.g. {"Authorization":"Bearer x"}), TS_TIMEOUT_MS (per request, 30000).
// Any failure: message on stderr, exit 1.

// The SDK lives in tests/peers/node_modules, which bare specifiers from this
// directory cannot reach, so import its ESM build by relative path.
import { Client } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/index.js";
import { StreamableHTTPClientTransport } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/streamableHttp.js";

const env = process.env;
const json = (name, dflt) => (env[name] ? JSON.parse(env[name]) : dflt);

async function main() {
  const url = process.argv[2];
  if (!url) throw new Error("usage: ts_client.mjs <mcp-url>");
  const timeout = Number(env.TS_TIMEOUT_MS || 30000);
  const opts = { timeout };

  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: json("TS_HEADERS", {}) },
  });
  const client = new Client({ name: "doorman-ts-client", version: "1.0.0" });
  await client.connect(transport, opts);
  const out = {
    serverInfo: client.getServerVersion() ?? null,
    protocolVersion: transport.protocolVersion ?? null,
    sessionId: transport.sessionId ?? null,
  };
  try {
    out.tools = (await client.listTools(undefined, opts)).tools.map((t) => t.name);

    out.echo = await client.callTool(
      { name: env.TS_ECHO_TOOL || "echo", arguments: { message: "hello from ts" } },
      undefined,
      opts,
    );

    const notifications = [];
    const result = await client.callTool(
      {
        name: env.TS_PROGRESS_TOOL || "trigger-long-running-operation",
        arguments: json("TS_PROGRESS_ARGS", { duration: 1, steps: 3 }),
      },
      undefined,
      // onprogress makes the SDK attach a progressToken; each notification restarts the timeout.
      { ...opts, onprogress: (p) => notifications.push(p), resetTimeoutOnProgress: true },
    );
    out.progress = { result, notifications };

    const resources = (await client.listResources(undefined, opts)).resources;
    out.resources = resources.map((r) => r.uri);
    const uri = env.TS_RESOURCE_URI || resources[0]?.uri;
    if (!uri) throw new Error("server listed no resources and TS_RESOURCE_URI is unset");
    out.read = await client.readResource({ uri }, opts);

    out.prompts = (await client.listPrompts(undefined, opts)).prompts.map((p) => p.name);
    out.prompt = await client.getPrompt(
      { name: env.TS_PROMPT_NAME || "simple-prompt", arguments: json("TS_PROMPT_ARGS", {}) },
      opts,
    );
  } finally {
    // DELETE the session (servers may answer 405 when they don't support it; that's not an error).
    await transport.terminateSession().catch((e) => console.error(`terminateSession: ${e.message ?? e}`));
    await client.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  console.error(err?.stack || String(err));
  process.exit(1);
});
