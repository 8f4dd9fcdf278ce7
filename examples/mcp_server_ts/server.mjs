// Notes: an MCP server on the official MCP TypeScript SDK (@modelcontextprotocol/sdk), whose tokens come from Keyfob.
// Plain JavaScript modules, so Node.js 20 runs it without a build step. The twin of examples/mcp_server.py.
//
//     keyfob serve                                                        # Keyfob on :8000 (README: both servers)
//     keyfob client add Notes --resource-server http://127.0.0.1:8002/mcp    # prints client_id and client_secret
//     npm ci && MCP_SERVER_CLIENT_ID=… MCP_SERVER_CLIENT_SECRET=… node server.mjs --port 8002 --keyfob http://127.0.0.1:8000
//
// Every bearer token goes to Keyfob's introspection (RFC 7662) as the resource server above (Keyfob lets only resource
// servers introspect, and answers active only for tokens bound to their URL). It must be active,
// bound to this server's URL (`aud`, RFC 8707) and carry `read`; `add_note` needs `write` too (403 insufficient_scope
// otherwise, so MCP clients step up). An active answer is kept CACHE_SECONDS, counted from before the question.
//
// Expiry: the SDK's requireBearerAuth refuses a token without an expiry ("Token has no expiration time"). Keyfob's
// tokens live until revoked, and its introspection says `exp` only when KEYFOB_IDLE_TOKEN_DAYS is set. Without
// one, this server treats each answer as expiring when its cache entry does: it asks Keyfob again after that.
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import express from "express";
import { z } from "zod";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import { getOAuthProtectedResourceMetadataUrl, mcpAuthMetadataRouter } from "@modelcontextprotocol/sdk/server/auth/router.js";
import { InvalidTokenError, ServerError } from "@modelcontextprotocol/sdk/server/auth/errors.js";

const CACHE_SECONDS = 5;
const WRITE_TOOLS = new Set(["add_note"]);
const notes = new Map(); // username → notes

const USAGE = `usage: node server.mjs [--port 8002] [--keyfob http://127.0.0.1:8000] --client-id ID --client-secret SECRET
Each option can come from the environment instead: MCP_SERVER_PORT, MCP_SERVER_KEYFOB (Keyfob's issuer, exactly as
its metadata spells it), MCP_SERVER_CLIENT_ID, MCP_SERVER_CLIENT_SECRET (better for the secret, which ps would show).`;
const env = process.env;
let options;
try {
  ({ values: options } = parseArgs({ options: {
    port: { type: "string", default: env.MCP_SERVER_PORT ?? "8002" },
    keyfob: { type: "string", default: env.MCP_SERVER_KEYFOB ?? "http://127.0.0.1:8000" },
    "client-id": { type: "string", default: env.MCP_SERVER_CLIENT_ID },
    "client-secret": { type: "string", default: env.MCP_SERVER_CLIENT_SECRET },
    help: { type: "boolean", short: "h" },
  } }));
} catch (error) {
  console.error(`${error.message}\n${USAGE}`);
  process.exit(2);
}
if (options.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!options["client-id"] || !options["client-secret"]) {
  console.error("Give the resource server's --client-id and --client-secret (keyfob client add NAME --resource-server"
                + ` URL).\n${USAGE}`);
  process.exit(2);
}
const keyfob = options.keyfob.replace(/\/$/, "");
const resource = new URL(`http://127.0.0.1:${options.port}/mcp`);
const resourceMetadataUrl = getOAuthProtectedResourceMetadataUrl(resource);

/** The SDK's OAuthTokenVerifier: asks Keyfob about each token, and keeps active answers CACHE_SECONDS. */
const answers = new Map(); // SHA-256 of the token → { until (ms), authInfo }
const verifier = {
  async verifyAccessToken(token) {
    const key = createHash("sha256").update(token).digest("hex");
    const cached = answers.get(key);
    if (cached && Date.now() < cached.until) return cached.authInfo;
    const asked = Date.now();
    const authInfo = await introspect(token, asked);
    for (const [other, answer] of answers) if (answer.until <= asked) answers.delete(other);
    answers.set(key, { until: asked + CACHE_SECONDS * 1000, authInfo });
    return authInfo;
  },
};

async function introspect(token, asked) {
  const credentials = Buffer.from(`${encodeURIComponent(options["client-id"])}:${encodeURIComponent(options["client-secret"])}`);
  let response;
  try {
    response = await fetch(`${keyfob}/oauth/introspection`, {
      method: "POST", body: new URLSearchParams({ token }), signal: AbortSignal.timeout(5000),
      headers: { Authorization: `Basic ${credentials.toString("base64")}`, Accept: "application/json" },
    });
  } catch (error) {
    console.error(`Keyfob's introspection did not answer: ${error.message}`);
    throw new ServerError(`Keyfob's introspection did not answer: ${error.message}`);
  }
  if (response.status !== 200) {
    console.error(`Keyfob refused to introspect (${response.status}): check the client ID and secret, and that the client`
                  + " was added with --resource-server");
    throw new ServerError("Keyfob refused to introspect: check the client ID and secret");
  }
  const answer = await response.json();
  // A token bound to another resource (Keyfob's own API, another server) is not for this one (RFC 8707 §2).
  if (answer.active !== true || answer.aud !== resource.href) throw new InvalidTokenError("The token is not active here");
  return {
    token, clientId: answer.client_id, scopes: answer.scope.split(" "), resource: new URL(answer.aud),
    expiresAt: answer.exp ?? Math.floor(asked / 1000) + CACHE_SECONDS, // see "Expiry" above
    extra: { username: answer.username, sub: answer.sub },
  };
}

function notesServer() {
  const server = new McpServer({ name: "Notes", version: "1.0.0" });
  server.registerTool("whoami", { description: "Who the bearer token speaks for, and what it may do." },
    async ({ authInfo }) => result({ username: authInfo.extra.username, sub: authInfo.extra.sub,
                                     client_id: authInfo.clientId, scope: authInfo.scopes.join(" ") }));
  server.registerTool("add_note", { description: "Add a note to your notes (needs the write scope).",
                                    inputSchema: { text: z.string() } },
    async ({ text }, { authInfo }) => {
      const mine = notes.get(authInfo.extra.username) ?? [];
      notes.set(authInfo.extra.username, [...mine, text]);
      return result({ notes: mine.length + 1 });
    });
  return server;
}

function result(value) {
  return { content: [{ type: "text", text: JSON.stringify(value) }], structuredContent: value };
}

/** A write tool called with a read-only token: 403 insufficient_scope, naming every scope it needs (MCP step-up). */
function writeToolsNeedWrite(req, res, next) {
  const calls = Array.isArray(req.body) ? req.body : [req.body];
  const writes = calls.some(call => call?.method === "tools/call" && WRITE_TOOLS.has(call?.params?.name));
  if (!writes || req.auth.scopes.includes("write")) return next();
  res.set("WWW-Authenticate",
    `Bearer error="insufficient_scope", scope="read write", resource_metadata="${resourceMetadataUrl}"`);
  res.status(403).json({ error: "insufficient_scope", error_description: "This tool needs write" });
}

/** Forward a POST to Keyfob's endpoint, for clients that look for /token and /register here (README: compatibility).
 *  Keyfob sees this server's address, so its per-address limits count every client that comes this way together. */
function toKeyfob(path) {
  return async (req, res) => {
    const headers = Object.fromEntries(["authorization", "content-type", "accept"]
      .filter(name => req.headers[name]).map(name => [name, req.headers[name]]));
    const answer = await fetch(`${keyfob}${path}`, { method: "POST", headers, body: req.rawBody });
    for (const name of ["content-type", "cache-control", "pragma", "www-authenticate", "retry-after"]) {
      if (answer.headers.get(name)) res.set(name, answer.headers.get(name));
    }
    res.status(answer.status).send(Buffer.from(await answer.arrayBuffer()));
  };
}

let oauthMetadata;
try {
  oauthMetadata = await (await fetch(`${keyfob}/.well-known/oauth-authorization-server`)).json();
} catch (error) {
  console.error(`Keyfob does not answer at ${keyfob}: ${error.cause?.code ?? error.message}`);
  process.exit(1);
}
const app = express();
app.use(mcpAuthMetadataRouter({ oauthMetadata, resourceServerUrl: resource, scopesSupported: ["read", "write"],
                                resourceName: "Notes" }));
app.get("/authorize", (req, res) => {
  res.redirect(oauthMetadata.authorization_endpoint + new URL(req.originalUrl, "http://here").search);
});
app.post(["/token", "/register"], express.raw({ type: () => true, limit: "64kb" }), (req, res, next) => {
  req.rawBody = req.body;
  next();
});
app.post("/token", toKeyfob("/oauth/token"));
app.post("/register", toKeyfob("/oauth/clients"));
app.post("/mcp", express.json({ limit: "1mb" }),
  requireBearerAuth({ verifier, requiredScopes: ["read"], resourceMetadataUrl, expectedResource: resource }),
  writeToolsNeedWrite,
  async (req, res) => {
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    const server = notesServer();
    res.on("close", () => { transport.close(); server.close(); });
    await server.connect(transport);
    await transport.handleRequest(req, res, req.body);
  });
app.all("/mcp", (req, res) => res.status(405).set("Allow", "POST").json({ error: "method_not_allowed" }));
app.listen(Number(options.port), "127.0.0.1", error => {
  if (error) {
    console.error(`Notes cannot listen on 127.0.0.1:${options.port}: ${error.code ?? error.message}`);
    process.exit(1);
  }
  console.log(`Notes is serving ${resource.href}`);
});
