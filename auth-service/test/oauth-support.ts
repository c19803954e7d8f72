// The OAuth authorization-code flow against a running test service, step by step as a client
// and a browser do it (tests-e2e/test_mcp_oauth.py runs it with the official MCP client and a
// real browser): register, authorize with PKCE, consent, exchange the code.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import { BASE_URL, PASSWORD, request, uniqueEmail, type JsonResponse } from "./helpers.js";

export const RESOURCE = "https://rag.test/mcp";
export const OTHER_RESOURCE = "https://rag.test";
export const OAUTH_ENV = { OAUTH_RESOURCES: `${OTHER_RESOURCE},${RESOURCE}` };
export const REDIRECT_URI = "http://127.0.0.1:53682/callback";

export function pkcePair(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

/** A signed-in user: its id and the session cookie a browser would hold. */
export interface BrowserUser {
  id: string;
  email: string;
  cookie: string;
}

/** The cookies a response sets, as a Cookie header (after `previous`, which they replace by name). */
export function cookiesOf(headers: Headers, previous = ""): string {
  const jar = new Map(previous.split("; ").filter(Boolean).map((c) => c.split(/=(.*)/s).slice(0, 2) as [string, string]));
  for (const cookie of headers.getSetCookie()) {
    const [name, value] = cookie.split(";")[0].split(/=(.*)/s);
    jar.set(name, value);
  }
  return [...jar].map(([name, value]) => `${name}=${value}`).join("; ");
}

export async function signUpInBrowser(base: string, tag = "oauth"): Promise<BrowserUser> {
  const email = uniqueEmail(tag);
  const res = await fetch(`${base}/api/auth/sign-up/email`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: BASE_URL },
    body: JSON.stringify({ email, password: PASSWORD, name: "OAuth User" }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const body = (await res.json()) as { user: { id: string } };
  return { id: body.user.id, email, cookie: cookiesOf(res.headers) };
}

export async function registerClient(base: string, metadata: Record<string, unknown> = {}): Promise<JsonResponse> {
  return request(base, "POST", "/api/auth/oauth2/register", {
    json: {
      client_name: "Test MCP client",
      redirect_uris: [REDIRECT_URI],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
      ...metadata,
    },
  });
}

export interface AuthorizeParams {
  clientId: string;
  challenge?: string;
  method?: string;
  redirectUri?: string;
  scope?: string;
  resource?: string | null;
  state?: string;
  prompt?: string;
}

/** GET /oauth2/authorize as the browser (with the session cookie): the 302 and where it points. */
export async function authorize(base: string, user: BrowserUser | null, p: AuthorizeParams): Promise<{ status: number; location: URL | null; body: string }> {
  const query = new URLSearchParams({
    response_type: "code",
    client_id: p.clientId,
    redirect_uri: p.redirectUri ?? REDIRECT_URI,
    scope: p.scope ?? "read write offline_access",
    state: p.state ?? "state-1",
  });
  if (p.challenge !== undefined) query.set("code_challenge", p.challenge);
  if (p.method !== undefined) query.set("code_challenge_method", p.method);
  if (p.resource !== null) query.set("resource", p.resource ?? RESOURCE);
  if (p.prompt) query.set("prompt", p.prompt);
  // node:http, not fetch(): fetch always sends `sec-fetch-mode: cors`, which gets JSON instead of
  // the 302 of a top-level navigation (a client opening the URL in the browser).
  const res = await navigate(`${base}/api/auth/oauth2/authorize?${query}`, user?.cookie);
  return { status: res.status, location: res.location ? new URL(res.location, base) : null, body: res.body };
}

function navigate(url: string, cookie?: string): Promise<{ status: number; location?: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers: { accept: "text/html", "sec-fetch-mode": "navigate", ...(cookie ? { cookie } : {}) } }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, body }));
    });
    req.on("error", reject);
  });
}

/** The consent page's POST (what its script sends): the URL the browser goes to next. */
export async function consent(base: string, user: BrowserUser, consentUrl: URL, accept: boolean): Promise<URL> {
  const res = await request(base, "POST", "/api/auth/oauth2/consent", {
    json: { accept, oauth_query: consentUrl.search.slice(1) },
    headers: { cookie: user.cookie, origin: BASE_URL, accept: "application/json" },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return new URL(res.body.url, base);
}

/**
 * Authorize and consent: the authorization code delivered to the redirect URI. `prompt=consent`
 * (as the MCP client sends with offline_access), else a second request of the same client skips it.
 */
export async function authorizationCode(base: string, user: BrowserUser, p: AuthorizeParams): Promise<string> {
  const first = await authorize(base, user, { prompt: "consent", ...p });
  assert.equal(first.status, 302, first.body);
  assert.equal(first.location?.pathname, "/oauth/consent");
  const back = await consent(base, user, first.location!, true);
  assert.equal(`${back.origin}${back.pathname}`, p.redirectUri ?? REDIRECT_URI);
  const code = back.searchParams.get("code");
  assert.ok(code, `no code in ${back}`);
  return code;
}

export async function tokenRequest(base: string, form: Record<string, string>): Promise<JsonResponse> {
  return request(base, "POST", "/api/auth/oauth2/token", {
    body: new URLSearchParams(form).toString(),
    headers: { "content-type": "application/x-www-form-urlencoded" },
  });
}

/** The whole flow for a new client: its id and the token response. */
export async function issueTokens(base: string, user: BrowserUser, resource = RESOURCE, scope = "read write offline_access") {
  const registered = await registerClient(base);
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  const clientId = registered.body.client_id as string;
  const { verifier, challenge } = pkcePair();
  const code = await authorizationCode(base, user, { clientId, challenge, method: "S256", resource, scope });
  const tokens = await tokenRequest(base, {
    grant_type: "authorization_code",
    code,
    redirect_uri: REDIRECT_URI,
    client_id: clientId,
    code_verifier: verifier,
    resource,
  });
  assert.equal(tokens.status, 200, JSON.stringify(tokens.body));
  return { clientId, tokens: tokens.body as { access_token: string; refresh_token?: string; scope: string; expires_in: number } };
}
