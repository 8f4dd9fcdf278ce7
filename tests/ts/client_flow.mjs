// The MCP TypeScript SDK client (@modelcontextprotocol/sdk 1.x) signing in to an MCP server protected by Keyfob.
//
//     KEYFOB_PASSWORD=pw node client_flow.mjs http://127.0.0.1:8001/mcp --username alice
//
// Its OAuthClientProvider keeps everything in memory and approves each authorization through Keyfob's real
// sign-in and consent forms, headlessly. It calls `whoami` with the read grant the server's challenge asks for,
// then `add_note`: the 403 insufficient_scope makes the transport start a new authorization for "read write",
// which this script finishes (v1 leaves the callback to the app) before calling `add_note` again.
// Prints one JSON line: the tool results and every HTTP exchange the SDK made. Exits 1 on any failure.
import { parseArgs } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const REDIRECT_URI = "http://127.0.0.1:47231/callback"; // nothing listens: the code is read from the Location
const TIMEOUT_MS = 10_000;

const { positionals: [mcpUrl], values: { username } } = parseArgs({
  allowPositionals: true, options: { username: { type: "string", default: "alice" } },
});
const password = process.env.KEYFOB_PASSWORD;
if (!mcpUrl || !password) fail("usage: KEYFOB_PASSWORD=… node client_flow.mjs MCP_URL [--username NAME]");
setTimeout(() => fail(`gave up after ${6 * TIMEOUT_MS / 1000} s`), 6 * TIMEOUT_MS).unref();

// Every exchange the SDK makes: method, URL without query, status, and what it sent to Keyfob's endpoints.
const sent = [];
async function recordingFetch(url, init = {}) {
  const response = await fetch(url, { ...init, signal: init.signal ?? AbortSignal.timeout(TIMEOUT_MS) });
  const entry = { method: init.method ?? "GET", url: String(url).split("?")[0], status: response.status };
  const challenge = response.headers.get("www-authenticate");
  if (challenge) entry.www_authenticate = challenge;
  if (String(url).includes("/oauth/")) entry.body = redacted(parseBody(init.body));
  sent.push(entry);
  return response;
}

function parseBody(body) {
  if (body instanceof URLSearchParams) return Object.fromEntries(body);
  try { return JSON.parse(body); } catch { return body ?? null; }
}

function redacted(body) {
  const secrets = ["code", "code_verifier", "client_secret"];
  return body && typeof body === "object"
    ? Object.fromEntries(Object.entries(body).map(([name, value]) => [name, secrets.includes(name) ? "…" : value]))
    : body;
}

/** The SDK's OAuthClientProvider: storage in memory, the user's browser replaced by `approve`. */
class HeadlessProvider {
  constructor() {
    this.authorizations = []; // the query of each authorization URL the SDK opened
  }
  get redirectUrl() { return REDIRECT_URI; }
  get clientMetadata() {
    return { client_name: "TypeScript SDK test", redirect_uris: [REDIRECT_URI],
             grant_types: ["authorization_code"], response_types: ["code"], token_endpoint_auth_method: "none" };
  }
  state() { return (this.expectedState = crypto.randomUUID()); }
  clientInformation() { return this.client; }
  saveClientInformation(client) { this.client = client; }
  tokens() { return this.savedTokens; }
  saveTokens(tokens) { this.savedTokens = tokens; }
  saveCodeVerifier(verifier) { this.verifier = verifier; }
  codeVerifier() { return this.verifier; }
  async redirectToAuthorization(url) {
    const answer = await approve(url);
    // v1 leaves checking the callback to the app: the state it sent, and the issuer (RFC 9207) it started at.
    if (answer.get("state") !== this.expectedState) throw new Error(`state mismatch in ${answer}`);
    if (answer.get("iss") !== url.origin) throw new Error(`iss ${answer.get("iss")} is not ${url.origin}`);
    this.authorizations.push(Object.fromEntries(url.searchParams));
    this.code = answer.get("code");
  }
  takeCode() {
    const code = this.code;
    this.code = undefined;
    return code;
  }
}

/** A fresh cookie-keeping browser: open the URL, sign in when sent to, Approve; the redirect's query. */
async function approve(authorizationUrl) {
  const cookies = new Map();
  const browse = async (url, form) => {
    const response = await fetch(new URL(url, authorizationUrl), {
      method: form ? "POST" : "GET", redirect: "manual", signal: AbortSignal.timeout(TIMEOUT_MS),
      headers: { cookie: [...cookies].map(([name, value]) => `${name}=${value}`).join("; ") },
      body: form && new URLSearchParams(form),
    });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      cookies.set(pair.slice(0, pair.indexOf("=")), pair.slice(pair.indexOf("=") + 1));
    }
    return { status: response.status, location: response.headers.get("location"), text: await response.text() };
  };
  const expect = (page, status, what) => {
    if (page.status !== status) {
      throw new Error(`${what}: expected ${status}, got ${page.status} ${page.text.slice(0, 500)}`);
    }
    return page;
  };
  let page = await browse(authorizationUrl);
  if (page.status === 302 && page.location.endsWith("/session/new")) {
    const signIn = expect(await browse(page.location), 200, "sign-in page");
    const signedIn = expect(await browse("/session", { ...hiddenInputs(signIn.text), username, password }),
                            302, "signing in");
    page = await browse(signedIn.location);
  }
  expect(page, 200, "consent page");
  const approved = expect(await browse("/oauth/authorization", { ...hiddenInputs(page.text), decision: "approve" }),
                          302, "approving");
  if (!approved.location.startsWith(`${REDIRECT_URI}?`)) throw new Error(`approved to ${approved.location}`);
  return new URL(approved.location).searchParams;
}

function hiddenInputs(html) {
  const attribute = (tag, name) => tag.match(new RegExp(`\\s${name}="([^"]*)"`))?.[1];
  const inputs = html.match(/<input\b[^>]*>/g) ?? [];
  return Object.fromEntries(inputs.filter((tag) => attribute(tag, "type") === "hidden")
    .map((tag) => [attribute(tag, "name"), unescapeHtml(attribute(tag, "value") ?? "")]));
}

function unescapeHtml(text) {
  const named = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
  return text.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (entity, body) =>
    body[0] !== "#" ? named[body] ?? entity
      : String.fromCodePoint(body[1].toLowerCase() === "x" ? parseInt(body.slice(2), 16) : Number(body.slice(1))));
}

/** After the SDK stopped at the authorization redirect (UnauthorizedError), exchange the code it led to. */
async function finishAuthorization(transport, provider, error) {
  const code = provider.takeCode();
  if (!(error instanceof UnauthorizedError) || !code) throw error;
  await transport.finishAuth(code);
}

async function callTool(client, name, args = {}) {
  const result = await client.callTool({ name, arguments: args });
  if (result.isError) throw new Error(`${name} failed: ${JSON.stringify(result.content)}`);
  return result.structuredContent ?? JSON.parse(result.content[0].text);
}

function fail(message) {
  process.stderr.write(`client_flow: ${message}\n`);
  process.exit(1);
}

async function main() {
  const provider = new HeadlessProvider();
  const client = new Client({ name: "keyfob-ts-test", version: "1.0.0" });
  const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpUrl),
                                                               { authProvider: provider, fetch: recordingFetch });
  let transport = newTransport();
  await client.connect(transport).catch(async (error) => {
    await finishAuthorization(transport, provider, error);
    transport = newTransport(); // a transport starts only once; the provider carries the token over
    await client.connect(transport);
  });
  const whoami = await callTool(client, "whoami");
  const readToken = provider.tokens();

  const beforeStepUp = sent.length;
  // The 403 insufficient_scope makes the transport itself re-authorize for the challenged scope; v1 then throws
  // UnauthorizedError at the redirect, so the app exchanges the code and calls again, as after connect.
  const addNote = await callTool(client, "add_note", { text: "Buy milk" }).catch(async (error) => {
    await finishAuthorization(transport, provider, error);
    return callTool(client, "add_note", { text: "Buy milk" });
  });
  const refusals = sent.slice(beforeStepUp).filter((entry) => entry.status === 403);
  const whoamiAfter = await callTool(client, "whoami");
  await client.close();

  return {
    whoami, whoami_after_step_up: whoamiAfter, add_note: addNote,
    add_note_refusals: refusals.map(({ status, www_authenticate }) => ({ status, www_authenticate })),
    token_scopes: [readToken.scope, provider.tokens().scope],
    same_token_after_step_up: readToken.access_token === provider.tokens().access_token,
    client_id: provider.client.client_id,
    authorizations: provider.authorizations,
    sent,
  };
}

main().then((result) => {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}, (error) => fail(`${error?.stack ?? error}${error?.cause ? `\ncaused by: ${error.cause}` : ""}`));
