#!/usr/bin/env node
// An MCP client on the TypeScript SDK 1.32.2 that answers what servers ask of it: elicitation
// (form), sampling and roots, as a person and their model would.
//
//   tests/peers/node_modules/.bin/node tests/clients/ts_asks.mjs <mcp-url> <tool prefix>
//
// Calls server-everything's trigger-elicitation-request, trigger-sampling-request and
// get-roots-list (each under <tool prefix>, "" directly, "everything_" through Doorman) and prints
// ONE JSON object on stdout: {tools, results: [[texts, isError]...], asked: [[kind, detail]...]}.
// Any failure: message on stderr, exit 1.

import { Client } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/index.js";
import { StreamableHTTPClientTransport } from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
} from "../peers/node_modules/@modelcontextprotocol/sdk/dist/esm/types.js";

const ROOTS = ["file:///work/project-a", "file:///work/project-b"];

async function main() {
  const [url, prefix = ""] = process.argv.slice(2);
  if (!url) throw new Error("usage: ts_asks.mjs <mcp-url> <tool prefix>");
  const opts = { timeout: 60000 };
  const asked = [];
  const client = new Client(
    { name: "doorman-ts-asks", version: "1.0.0" },
    { capabilities: { elicitation: { form: {} }, sampling: {}, roots: { listChanged: true } } },
  );
  client.setRequestHandler(ElicitRequestSchema, async (req) => {
    asked.push(["elicitation", req.params.message]);
    return { action: "accept", content: { name: "Ada" } };
  });
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    const text = req.params.messages[0].content.text;
    asked.push(["sampling", text]);
    return { role: "assistant", model: "test-model", stopReason: "endTurn", content: { type: "text", text: `teal (re: ${text})` } };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    asked.push(["roots", null]);
    return { roots: ROOTS.map((uri) => ({ uri })) };
  });
  const transport = new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport, opts);
  const out = { asked };
  try {
    out.tools = (await client.listTools(undefined, opts)).tools.map((t) => t.name);
    out.results = [];
    for (const [name, args] of [
      ["trigger-elicitation-request", {}],
      ["trigger-sampling-request", { prompt: "pick a colour", maxTokens: 10 }],
      ["get-roots-list", {}],
    ]) {
      const r = await client.callTool({ name: prefix + name, arguments: args }, undefined, opts);
      out.results.push([r.content.filter((c) => c.type === "text").map((c) => c.text), Boolean(r.isError)]);
    }
  } finally {
    await transport.terminateSession().catch(() => {});
    await client.close();
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((err) => {
  console.error(err?.stack || String(err));
  process.exit(1);
});
