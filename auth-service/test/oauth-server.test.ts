// The auth-service as an OAuth 2.1 authorization server (src/oauth-server.ts), tried the way a
// client and an attacker would: discovery, dynamic client registration, PKCE (S256 only),
// exact redirect URIs, resource-bound JWT access tokens, refresh-token rotation, the sign-in
// and consent pages. Real service, real database; tests-e2e/test_mcp_oauth.py runs the flow
// with the official MCP client, a real browser and the rag-service.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import * as OTPAuth from "otpauth";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";
import {
  authorizationCode,
  authorize,
  consent,
  cookiesOf,
  issueTokens,
  OAUTH_ENV,
  OTHER_RESOURCE,
  pkcePair,
  REDIRECT_URI,
  registerClient,
  RESOURCE,
  signUpInBrowser,
  tokenRequest,
  type BrowserUser,
} from "./oauth-support.js";
import { validateClaims } from "./org-support.js";

let svc: TestService;
let user: BrowserUser;

before(async () => {
  svc = await startTestService(OAUTH_ENV);
  user = await signUpInBrowser(svc.url);
});
after(async () => {
  await svc?.stop();
});

async function verifyAccessToken(token: string, audience: string) {
  const jwks = createRemoteJWKSet(new URL(`${svc.url}/api/auth/jwks`));
  return jwtVerify(token, jwks, { algorithms: ["EdDSA"], audience, issuer: BASE_URL, requiredClaims: ["sub", "exp", "iat", "iss", "aud"] });
}

async function newClient(): Promise<string> {
  const registered = await registerClient(svc.url);
  assert.equal(registered.status, 201, JSON.stringify(registered.body));
  return registered.body.client_id;
}

/** An authorization code for a new client, with the verifier that redeems it. */
async function codeForNewClient() {
  const clientId = await newClient();
  const { verifier, challenge } = pkcePair();
  const code = await authorizationCode(svc.url, user, { clientId, challenge, method: "S256" });
  const redeem = (overrides: Record<string, string> = {}) =>
    tokenRequest(svc.url, { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, client_id: clientId, code_verifier: verifier, resource: RESOURCE, ...overrides });
  return { clientId, code, verifier, redeem };
}

describe("discovery", () => {
  test("RFC 8414 metadata at the issuer's root: S256 only, registration, no client_credentials", async () => {
    const res = await request(svc.url, "GET", "/.well-known/oauth-authorization-server");
    assert.equal(res.status, 200);
    const md = res.body;
    assert.equal(md.issuer, BASE_URL);
    assert.equal(md.authorization_endpoint, `${BASE_URL}/api/auth/oauth2/authorize`);
    assert.equal(md.token_endpoint, `${BASE_URL}/api/auth/oauth2/token`);
    assert.equal(md.registration_endpoint, `${BASE_URL}/api/auth/oauth2/register`);
    assert.equal(md.jwks_uri, `${BASE_URL}/api/auth/jwks`);
    assert.deepEqual(md.code_challenge_methods_supported, ["S256"]);
    assert.deepEqual(md.grant_types_supported, ["authorization_code", "refresh_token"]);
    assert.deepEqual(md.response_types_supported, ["code"]);
    assert.ok(md.token_endpoint_auth_methods_supported.includes("none"), "public clients (MCP) are supported");
    for (const scope of ["read", "write", "offline_access"]) assert.ok(md.scopes_supported.includes(scope), scope);
  });

  test("OIDC discovery names the same endpoints", async () => {
    const oauth = await request(svc.url, "GET", "/.well-known/oauth-authorization-server");
    const oidc = await request(svc.url, "GET", "/.well-known/openid-configuration");
    assert.equal(oidc.status, 200);
    for (const field of ["issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint", "jwks_uri"]) {
      assert.equal(oidc.body[field], oauth.body[field], field);
    }
    assert.equal(oidc.body.userinfo_endpoint, `${BASE_URL}/api/auth/oauth2/userinfo`);
  });
});

describe("dynamic client registration (RFC 7591)", () => {
  test("a native public client registers without an account and is linked to the configured resources", async () => {
    const res = await registerClient(svc.url, { client_name: "Claude Desktop" });
    assert.equal(res.status, 201);
    assert.match(res.body.client_id, /^[A-Za-z]{32}$/);
    assert.equal(res.body.client_secret, undefined, "a public client gets no secret");
    assert.equal(res.body.token_endpoint_auth_method, "none");
    assert.equal(res.body.application_type, "native");
    assert.deepEqual(res.body.redirect_uris, [REDIRECT_URI]);
    assert.deepEqual(res.body.resources, [OTHER_RESOURCE, RESOURCE]);
  });

  test("with OAUTH_DYNAMIC_REGISTRATION=false nobody registers, and the metadata says so", async () => {
    const closed = await startTestService({ ...OAUTH_ENV, OAUTH_DYNAMIC_REGISTRATION: "false" }, undefined, svc);
    try {
      const res = await registerClient(closed.url);
      assert.equal(res.status, 403);
      assert.equal(res.body.error, "access_denied");
      const md = await request(closed.url, "GET", "/.well-known/oauth-authorization-server");
      assert.equal(md.body.registration_endpoint, undefined);
    } finally {
      await closed.stop();
    }
  });

  test("registrations per client IP are limited like sign-ups (AUTH_RATE_LIMIT_SIGNIN_*)", async () => {
    // Its own database and counters there: the other services of this file registered plenty.
    const limited = await startTestService({ ...OAUTH_ENV, AUTH_RATE_LIMIT_SIGNIN_MAX: "2", AUTH_RATE_LIMIT_STORAGE: "database" });
    try {
      assert.equal((await registerClient(limited.url)).status, 201);
      assert.equal((await registerClient(limited.url)).status, 201);
      const third = await registerClient(limited.url);
      assert.equal(third.status, 429);
      assert.ok(third.headers.get("retry-after"));
    } finally {
      await limited.stop();
    }
  });

  const refused: [string, Record<string, unknown>, string][] = [
    ["a redirect URI with a fragment", { redirect_uris: ["http://127.0.0.1:1/cb#x"] }, "invalid_redirect_uri"],
    ["a plain-http redirect URI off loopback", { redirect_uris: ["http://evil.example/cb"] }, "invalid_redirect_uri"],
    ["no redirect URI", { redirect_uris: [] }, "invalid_redirect_uri"],
    ["only the client_credentials grant", { grant_types: ["client_credentials"] }, "invalid_client_metadata"],
    ["a client making itself trusted (skip_consent)", { skip_consent: true }, "invalid_client_metadata"],
  ];
  for (const [what, metadata, error] of refused) {
    test(`${what} is refused`, async () => {
      const res = await registerClient(svc.url, metadata);
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.error, error);
    });
  }
});

describe("authorization code with PKCE", () => {
  test("without a code_challenge the client gets invalid_request, and no code", async () => {
    const res = await authorize(svc.url, user, { clientId: await newClient() });
    assert.equal(res.status, 302);
    assert.equal(`${res.location!.origin}${res.location!.pathname}`, REDIRECT_URI);
    assert.equal(res.location!.searchParams.get("error"), "invalid_request");
    assert.equal(res.location!.searchParams.get("code"), null);
  });

  test("a client cannot register its way out of PKCE (require_pkce is ignored)", async () => {
    const registered = await registerClient(svc.url, { require_pkce: false });
    assert.equal(registered.status, 201);
    const res = await authorize(svc.url, user, { clientId: registered.body.client_id });
    assert.equal(res.location!.searchParams.get("error"), "invalid_request");
    assert.match(res.location!.searchParams.get("error_description")!, /pkce is required/);
  });

  test("the plain method is refused: S256 only", async () => {
    const { verifier } = pkcePair();
    const res = await authorize(svc.url, user, { clientId: await newClient(), challenge: verifier, method: "plain" });
    assert.equal(res.location!.searchParams.get("error"), "invalid_request");
    assert.match(res.location!.searchParams.get("error_description")!, /S256/);
    assert.equal(res.location!.searchParams.get("code"), null);
  });

  test("a wrong or missing code_verifier is refused", async () => {
    const { redeem } = await codeForNewClient();
    const wrong = await redeem({ code_verifier: pkcePair().verifier });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error, "invalid_grant");
    assert.equal(wrong.body.access_token, undefined);
    const missing = await redeem({ code_verifier: "" });
    assert.equal(missing.status, 400);
    assert.equal(missing.body.access_token, undefined);
  });

  test("a code is redeemed once; presenting it again revokes the tokens it gave", async () => {
    const { clientId, redeem } = await codeForNewClient();
    const first = await redeem();
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const again = await redeem();
    assert.equal(again.status, 400);
    assert.equal(again.body.error, "invalid_grant");
    const refresh = await tokenRequest(svc.url, { grant_type: "refresh_token", refresh_token: first.body.refresh_token, client_id: clientId });
    assert.equal(refresh.status, 400, "the refresh token of a replayed code is revoked");
  });

  test("another client cannot redeem the code", async () => {
    const { redeem } = await codeForNewClient();
    const res = await redeem({ client_id: await newClient() });
    assert.equal(res.status, 400);
    assert.equal(res.body.access_token, undefined);
  });
});

describe("redirect URIs match exactly", () => {
  for (const [what, redirectUri] of [
    ["another path", "http://127.0.0.1:53682/other"],
    ["an added query", `${REDIRECT_URI}?next=1`],
    ["another host", "http://localhost:53682/callback"],
    ["a trailing slash", `${REDIRECT_URI}/`],
  ]) {
    test(`${what}: an error page of the auth-service, never a redirect to that URI`, async () => {
      const { challenge } = pkcePair();
      const res = await authorize(svc.url, user, { clientId: await newClient(), challenge, method: "S256", redirectUri });
      assert.equal(res.status, 302);
      assert.equal(res.location!.origin, BASE_URL);
      assert.equal(res.location!.pathname, "/api/auth/error");
      assert.equal(res.location!.searchParams.get("error"), "invalid_redirect");
    });
  }

  test("the token request must repeat the authorized redirect URI", async () => {
    const { redeem } = await codeForNewClient();
    const res = await redeem({ redirect_uri: "http://127.0.0.1:53682/other" });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, "invalid_grant");
  });
});

describe("access tokens", () => {
  test("a JWT from the JWKS the rag-service trusts: the user, the requested resource, the granted scopes", async () => {
    const { clientId, tokens } = await issueTokens(svc.url, user);
    assert.equal(tokens.scope, "read write offline_access");
    assert.equal(tokens.expires_in, 900, "as long as a session's access JWT (JWT_EXPIRES_IN)");
    assert.equal(decodeProtectedHeader(tokens.access_token).typ, "at+jwt");
    const { payload, protectedHeader } = await verifyAccessToken(tokens.access_token, RESOURCE);
    assert.equal(protectedHeader.alg, "EdDSA");
    assert.equal(payload.sub, user.id);
    assert.equal(payload.aud, RESOURCE);
    assert.equal(payload.scope, "read write offline_access");
    assert.equal(payload.client_id, clientId);
    assert.equal(payload.email, undefined, "no personal data in the token");
    assert.ok(validateClaims(payload), JSON.stringify(validateClaims.errors));
    await assert.rejects(verifyAccessToken(tokens.access_token, "rag-service"), /aud/, "not a session token's audience");
  });

  test("the audience is the resource asked for; another resource is refused", async () => {
    const { tokens } = await issueTokens(svc.url, user, OTHER_RESOURCE, "read");
    const { payload } = await verifyAccessToken(tokens.access_token, OTHER_RESOURCE);
    assert.equal(payload.scope, "read");
    const { challenge } = pkcePair();
    const res = await authorize(svc.url, user, { clientId: await newClient(), challenge, method: "S256", resource: "https://evil.example/mcp" });
    assert.equal(res.location!.searchParams.get("error"), "invalid_target");
    assert.equal(res.location!.searchParams.get("code"), null);
  });

  test("the token request cannot widen the resource the user authorized", async () => {
    const { redeem } = await codeForNewClient();
    const res = await redeem({ resource: OTHER_RESOURCE });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, "invalid_target");
  });

  test("the user's organizations are in the token, as in a session token", async () => {
    const member = await signUpInBrowser(svc.url, "oauth-org");
    const created = await request(svc.url, "POST", "/api/auth/organization/create", {
      json: { name: "OAuth Team", slug: `oauth-team-${Date.now()}` },
      headers: { cookie: member.cookie, origin: BASE_URL },
    });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const { tokens } = await issueTokens(svc.url, member);
    const { payload } = await verifyAccessToken(tokens.access_token, RESOURCE);
    assert.deepEqual(payload.orgs, [{ id: created.body.id, role: "owner" }]);
    assert.ok(validateClaims(payload), JSON.stringify(validateClaims.errors));
  });

  test("the client_credentials grant is refused: a token always belongs to a user", async () => {
    const registered = await registerClient(svc.url, { token_endpoint_auth_method: "client_secret_post" });
    assert.equal(registered.status, 201);
    const res = await tokenRequest(svc.url, {
      grant_type: "client_credentials",
      client_id: registered.body.client_id,
      client_secret: registered.body.client_secret,
      resource: RESOURCE,
    });
    assert.equal(res.status, 400);
    assert.equal(res.body.error, "unsupported_grant_type");
  });
});

describe("refresh tokens", () => {
  test("rotate: the new pair works, the old refresh token is refused and ends the whole family", async () => {
    const { clientId, tokens } = await issueTokens(svc.url, user);
    const refreshed = await tokenRequest(svc.url, { grant_type: "refresh_token", refresh_token: tokens.refresh_token!, client_id: clientId, resource: RESOURCE });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.notEqual(refreshed.body.refresh_token, tokens.refresh_token);
    const { payload } = await verifyAccessToken(refreshed.body.access_token, RESOURCE);
    assert.equal(payload.sub, user.id);
    const replay = await tokenRequest(svc.url, { grant_type: "refresh_token", refresh_token: tokens.refresh_token!, client_id: clientId, resource: RESOURCE });
    assert.equal(replay.status, 400);
    assert.equal(replay.body.error, "invalid_grant");
    const afterReplay = await tokenRequest(svc.url, { grant_type: "refresh_token", refresh_token: refreshed.body.refresh_token, client_id: clientId, resource: RESOURCE });
    assert.equal(afterReplay.status, 400, "a replayed refresh token revokes its successors");
  });

  test("a refreshed token outlives the browser session that authorized it, and still fits the shared schema", async () => {
    const person = await signUpInBrowser(svc.url, "oauth-logout");
    const { clientId, tokens } = await issueTokens(svc.url, person);
    const out = await request(svc.url, "POST", "/api/auth/sign-out", { json: {}, headers: { cookie: person.cookie, origin: BASE_URL } });
    assert.equal(out.status, 200);
    const refreshed = await tokenRequest(svc.url, { grant_type: "refresh_token", refresh_token: tokens.refresh_token!, client_id: clientId, resource: RESOURCE });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    const { payload } = await verifyAccessToken(refreshed.body.access_token, RESOURCE);
    assert.equal(payload.sub, person.id);
    assert.equal(payload.sid, null, "its session has ended");
    assert.ok(validateClaims(payload), JSON.stringify(validateClaims.errors));
  });

  test("withdrawing consent ends the client's grant: its refresh token is refused", async () => {
    const person = await signUpInBrowser(svc.url, "oauth-withdraw");
    const kept = await issueTokens(svc.url, person);
    const withdrawn = await issueTokens(svc.url, person);
    const consents = await request(svc.url, "GET", "/api/auth/oauth2/get-consents", { headers: { cookie: person.cookie } });
    assert.equal(consents.status, 200);
    const consentOf = (clientId: string) => consents.body.find((c: { clientId: string }) => c.clientId === clientId).id;
    // Another user cannot withdraw it.
    const stranger = await request(svc.url, "POST", "/api/auth/oauth2/delete-consent", {
      json: { id: consentOf(withdrawn.clientId) },
      headers: { cookie: user.cookie, origin: BASE_URL },
    });
    assert.equal(stranger.status, 401);
    const refresh = (grant: typeof kept) =>
      tokenRequest(svc.url, { grant_type: "refresh_token", refresh_token: grant.tokens.refresh_token!, client_id: grant.clientId, resource: RESOURCE });
    const deleted = await request(svc.url, "POST", "/api/auth/oauth2/delete-consent", {
      json: { id: consentOf(withdrawn.clientId) },
      headers: { cookie: person.cookie, origin: BASE_URL },
    });
    assert.equal(deleted.status, 200, JSON.stringify(deleted.body));
    const refused = await refresh(withdrawn);
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error, "invalid_grant");
    assert.equal((await refresh(kept)).status, 200, "the other client's grant stays");
  });

  test("without offline_access there is no refresh token", async () => {
    const { tokens } = await issueTokens(svc.url, user, RESOURCE, "read write");
    assert.equal(tokens.refresh_token, undefined);
  });
});

describe("sign-in and consent pages", () => {
  test("signing in on the sign-in page continues to the consent page, then the code", async () => {
    const clientId = await newClient();
    const { challenge } = pkcePair();
    const anonymous = await authorize(svc.url, null, { clientId, challenge, method: "S256" });
    assert.equal(anonymous.location!.pathname, "/oauth/sign-in");
    const page = await fetch(anonymous.location!);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-security-policy")!, /frame-ancestors 'none'/);
    assert.match(page.headers.get("content-security-policy")!, /script-src 'self'/);
    assert.match(await page.text(), /<form id="sign-in">/);

    const email = uniqueEmail("oauth-page");
    const signUp = await request(svc.url, "POST", "/api/auth/sign-up/email", { json: { email, password: PASSWORD, name: "Page User" }, headers: { origin: BASE_URL } });
    assert.equal(signUp.status, 200);
    // What the page's script sends: the credentials and the signed authorization request.
    const signIn = await fetch(`${svc.url}/api/auth/sign-in/email`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", origin: BASE_URL },
      body: JSON.stringify({ email, password: PASSWORD, oauth_query: anonymous.location!.search.slice(1) }),
    });
    assert.equal(signIn.status, 200);
    const next = new URL(((await signIn.json()) as { url: string }).url, svc.url);
    assert.equal(next.pathname, "/oauth/consent");
    const cookie = cookiesOf(signIn.headers);
    const consentPage = await fetch(next, { headers: { cookie } });
    assert.equal(consentPage.status, 200);
    const html = await consentPage.text();
    assert.match(html, /Test MCP client/);
    assert.match(html, new RegExp(`Signed in as ${email.replace(/[.+]/g, "\\$&")}`));
    assert.match(html, /Search and read your documents/);
    const back = await consent(svc.url, { id: signUp.body.user.id, email, cookie }, next, true);
    assert.ok(back.searchParams.get("code"));
  });

  test("an account with two-factor codes gives its code on the sign-in page, then continues to consent", async () => {
    const person = await signUpInBrowser(svc.url, "oauth-2fa");
    const enable = await request(svc.url, "POST", "/api/auth/two-factor/enable", { json: { password: PASSWORD }, headers: { cookie: person.cookie, origin: BASE_URL } });
    assert.equal(enable.status, 200, JSON.stringify(enable.body));
    const totp = OTPAuth.URI.parse(enable.body.totpURI) as OTPAuth.TOTP;
    const confirm = await request(svc.url, "POST", "/api/auth/two-factor/verify-totp", {
      json: { code: totp.generate() },
      headers: { cookie: cookiesOf(enable.headers, person.cookie), origin: BASE_URL },
    });
    assert.equal(confirm.status, 200, JSON.stringify(confirm.body));

    const { challenge } = pkcePair();
    const anonymous = await authorize(svc.url, null, { clientId: await newClient(), challenge, method: "S256" });
    const oauthQuery = anonymous.location!.search.slice(1);
    // What the page's script sends: the password first...
    const signIn = await request(svc.url, "POST", "/api/auth/sign-in/email", {
      json: { email: person.email, password: PASSWORD, oauth_query: oauthQuery },
      headers: { origin: BASE_URL, accept: "application/json" },
    });
    assert.equal(signIn.status, 200);
    assert.equal(signIn.body.twoFactorRedirect, true);
    assert.equal(signIn.body.url, undefined, "no authorization before the code");
    // ...then the code (the next period's: the confirming one is spent), with the challenge cookie.
    const verified = await request(svc.url, "POST", "/api/auth/two-factor/verify-totp", {
      json: { code: totp.generate({ timestamp: Date.now() + 30_000 }), oauth_query: oauthQuery },
      headers: { cookie: cookiesOf(signIn.headers), origin: BASE_URL, accept: "application/json" },
    });
    assert.equal(verified.status, 200, JSON.stringify(verified.body));
    assert.equal(new URL(verified.body.url, svc.url).pathname, "/oauth/consent");
  });

  test("denying consent sends access_denied to the client, and no code", async () => {
    const { challenge } = pkcePair();
    const first = await authorize(svc.url, user, { clientId: await newClient(), challenge, method: "S256", prompt: "consent", state: "s-deny" });
    const back = await consent(svc.url, user, first.location!, false);
    assert.equal(`${back.origin}${back.pathname}`, REDIRECT_URI);
    assert.equal(back.searchParams.get("error"), "access_denied");
    assert.equal(back.searchParams.get("state"), "s-deny");
    assert.equal(back.searchParams.get("code"), null);
  });

  test("a tampered or unsigned authorization request gets an error page, not a form", async () => {
    const { challenge } = pkcePair();
    const first = await authorize(svc.url, user, { clientId: await newClient(), challenge, method: "S256", prompt: "consent" });
    const tampered = new URL(first.location!);
    tampered.searchParams.set("scope", "read write offline_access openid");
    for (const url of [tampered, new URL("/oauth/consent?client_id=x&scope=write", svc.url), new URL("/oauth/sign-in", svc.url)]) {
      const res = await fetch(url, { headers: { cookie: user.cookie } });
      assert.equal(res.status, 400, url.toString());
      assert.match(await res.text(), /invalid or has expired/);
    }
    const consentWithTampered = await request(svc.url, "POST", "/api/auth/oauth2/consent", {
      json: { accept: true, oauth_query: tampered.search.slice(1) },
      headers: { cookie: user.cookie, origin: BASE_URL },
    });
    assert.equal(consentWithTampered.status, 400);
  });

  test("consent from another origin is refused (CSRF), and no code is issued", async () => {
    const { challenge } = pkcePair();
    const first = await authorize(svc.url, user, { clientId: await newClient(), challenge, method: "S256", prompt: "consent" });
    const res = await request(svc.url, "POST", "/api/auth/oauth2/consent", {
      json: { accept: true, oauth_query: first.location!.search.slice(1) },
      headers: { cookie: user.cookie, origin: "http://evil.example" },
    });
    assert.equal(res.status, 403);
    assert.equal(res.body.url, undefined);
  });

  test("the client's self-chosen name is shown as text, never as markup", async () => {
    const registered = await registerClient(svc.url, { client_name: `<img src=x onerror="alert(1)">` });
    const { challenge } = pkcePair();
    const first = await authorize(svc.url, user, { clientId: registered.body.client_id, challenge, method: "S256", prompt: "consent" });
    const html = await (await fetch(first.location!, { headers: { cookie: user.cookie } })).text();
    assert.doesNotMatch(html, /<img/);
    assert.match(html, /&#60;img src=x onerror=&#34;alert\(1\)&#34;&#62;/);
  });
});
