// Single sign-on configuration (OIDC_PROVIDERS, src/sso-config.ts): what is accepted, what
// stops the service and with which sentence; and what a service started with providers shows
// (the public provider list, no secrets) and sends (an authorization URL with state, PKCE S256).
// The sign-in itself, against a real OpenID provider in Chromium, is tests-e2e/test_sso.py.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { test } from "node:test";
import { ConfigError, loadConfig } from "../src/config.js";
import { migrate } from "../src/migrate.js";
import { parseSsoProviders, secretVariable, SsoConfigError } from "../src/sso-config.js";
import { genericProviderConfigs } from "../src/sso.js";
import { BASE_URL, request, startTestService, tempDir } from "./helpers.js";

const dev = (providers: unknown, env: Record<string, string> = {}) => parseSsoProviders(JSON.stringify(providers), env, true);

function refused(providers: unknown, message: RegExp, devMode = true) {
  assert.throws(
    () => parseSsoProviders(typeof providers === "string" ? providers : JSON.stringify(providers), {}, devMode),
    (e: Error) => e instanceof SsoConfigError && message.test(e.message),
    `expected ${message} for ${JSON.stringify(providers)}`,
  );
}

test("no OIDC_PROVIDERS (or an empty one): no providers", () => {
  assert.deepEqual(parseSsoProviders(undefined, {}, true), []);
  assert.deepEqual(parseSsoProviders("  ", {}, false), []);
  assert.deepEqual(dev([]), []);
});

test("every preset is read with its defaults, in the order given", () => {
  const providers = dev([
    { type: "oidc", id: "acme", name: "Acme SSO", discoveryUrl: "https://idp.acme.example/.well-known/openid-configuration", clientId: "a", clientSecret: "sa" },
    { type: "oidc", id: "local", issuer: "http://127.0.0.1:3005/", clientId: "l", clientSecret: "sl", scopes: ["groups"], allowSignUp: false },
    { type: "okta", issuer: "https://acme.okta.com/oauth2/default", clientId: "o", clientSecret: "so" },
    { type: "keycloak", id: "kc", issuer: "https://sso.acme.example/realms/staff", clientId: "k", clientSecret: "sk" },
    { type: "google", clientId: "g", clientSecret: "sg" },
    { type: "microsoft", clientId: "m", clientSecret: "sm", tenantId: "organizations" },
    { type: "github", name: "GitHub (Acme)", clientId: "h", clientSecret: "sh" },
  ]);
  assert.deepEqual(providers.map((p) => [p.id, p.type, p.name]), [
    ["acme", "oidc", "Acme SSO"],
    ["local", "oidc", "local"],
    ["okta", "okta", "Okta"],
    ["kc", "keycloak", "Keycloak"],
    ["google", "google", "Google"],
    ["microsoft", "microsoft", "Microsoft"],
    ["github", "github", "GitHub (Acme)"],
  ]);
  assert.equal(providers[0]!.discoveryUrl, "https://idp.acme.example/.well-known/openid-configuration");
  assert.equal(providers[1]!.discoveryUrl, "http://127.0.0.1:3005/.well-known/openid-configuration", "issuer -> its discovery document");
  assert.equal(providers[2]!.discoveryUrl, "https://acme.okta.com/oauth2/default/.well-known/openid-configuration");
  assert.equal(providers[3]!.discoveryUrl, "https://sso.acme.example/realms/staff/.well-known/openid-configuration");
  assert.equal(providers[4]!.discoveryUrl, undefined, "Google is Better Auth's built-in provider");
  assert.equal(providers[5]!.tenantId, "organizations");
  assert.deepEqual(providers[1]!.scopes, ["groups"]);
  assert.equal(providers[1]!.allowSignUp, false);
  assert.equal(providers[0]!.allowSignUp, true, "sign-up is allowed unless turned off");
  assert.equal(dev([{ type: "microsoft", clientId: "m", clientSecret: "s" }])[0]!.tenantId, "common");
});

test("a secret left out of the JSON comes from OIDC_<ID>_CLIENT_SECRET", () => {
  assert.equal(secretVariable("acme-staff"), "OIDC_ACME_STAFF_CLIENT_SECRET");
  const [provider] = dev([{ type: "oidc", id: "acme-staff", issuer: "https://idp.acme.example", clientId: "a" }], { OIDC_ACME_STAFF_CLIENT_SECRET: "from-env" });
  assert.equal(provider!.clientSecret, "from-env");
  const [given] = dev([{ type: "google", clientId: "g", clientSecret: "in-json" }], { OIDC_GOOGLE_CLIENT_SECRET: "from-env" });
  assert.equal(given!.clientSecret, "in-json", "the JSON wins");
  refused([{ type: "oidc", id: "acme", issuer: "https://idp.acme.example", clientId: "a" }], /"acme".*no client secret: set "clientSecret" or OIDC_ACME_CLIENT_SECRET/);
});

test("malformed configurations stop the service with a sentence naming the provider and the field", () => {
  refused("{not json", /OIDC_PROVIDERS is not valid JSON/);
  refused({ type: "google" }, /must be a JSON list/);
  refused(["google"], /OIDC_PROVIDERS\[0\] must be an object/);
  refused([{ type: "saml", clientId: "x", clientSecret: "y" }], /"type" must be one of oidc, okta, keycloak, google, microsoft, github, got "saml"/);
  refused([{ type: "oidc", issuer: "https://idp.example", clientId: "x", clientSecret: "y" }], /OIDC_PROVIDERS\[0\]: "id" is required/);
  refused([{ type: "oidc", id: "Acme SSO", issuer: "https://idp.example", clientId: "x", clientSecret: "y" }], /"id" must be 1-32 lowercase/);
  refused([{ type: "oidc", id: "credential", issuer: "https://idp.example", clientId: "x", clientSecret: "y" }], /not credential/);
  refused([{ type: "google", id: "workspace", clientId: "x", clientSecret: "y" }], /a google provider's id is "google"/);
  refused([{ type: "google", clientID: "x", clientSecret: "y" }], /\("google"\): unknown field "clientID"/);
  refused([{ type: "github", clientId: "x", clientSecret: "y", tenantId: "t" }], /unknown field "tenantId"/);
  refused([{ type: "google", clientSecret: "y" }], /\("google"\): "clientId" is required/);
  refused([{ type: "google", clientId: " x", clientSecret: "y" }], /"clientId" must be a string without surrounding spaces/);
  refused([{ type: "oidc", id: "acme", clientId: "x", clientSecret: "y" }], /either "discoveryUrl" or "issuer"/);
  refused([{ type: "oidc", id: "acme", issuer: "https://a.example", discoveryUrl: "https://a.example/.well-known/openid-configuration", clientId: "x", clientSecret: "y" }], /either "discoveryUrl" or "issuer"/);
  refused([{ type: "okta", clientId: "x", clientSecret: "y" }], /\("okta"\): "issuer" is required/);
  refused([{ type: "oidc", id: "acme", issuer: "not a url", clientId: "x", clientSecret: "y" }], /"issuer" is not a URL/);
  refused([{ type: "oidc", id: "acme", issuer: "ftp://idp.example", clientId: "x", clientSecret: "y" }], /must be an https:\/\/ URL/);
  refused([{ type: "oidc", id: "acme", issuer: "http://idp.example", clientId: "x", clientSecret: "y" }], /plain http is accepted only for localhost/);
  refused([{ type: "google", clientId: "x", clientSecret: "y", scopes: "email" }], /"scopes" must be a list/);
  refused([{ type: "google", clientId: "x", clientSecret: "y", scopes: ["a b"] }], /"scopes" must be a list/);
  refused([{ type: "google", clientId: "x", clientSecret: "y", allowSignUp: "no" }], /"allowSignUp" must be true or false/);
  refused([{ type: "google", clientId: "x", clientSecret: "y", name: "n".repeat(41) }], /"name" must be at most 40/);
  refused([{ type: "google", clientId: "x", clientSecret: "y" }, { type: "google", clientId: "z", clientSecret: "w" }], /the id "google" is used twice/);
});

test("production accepts plain http for no provider, not even on loopback", () => {
  const local = [{ type: "oidc", id: "local", issuer: "http://127.0.0.1:3005", clientId: "x", clientSecret: "y" }];
  assert.equal(dev(local).length, 1);
  refused(local, /must be an https:\/\/ URL/, false);
});

test("loadConfig turns a bad OIDC_PROVIDERS into a ConfigError (the service refuses to start)", () => {
  const dir = tempDir();
  try {
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, OIDC_PROVIDERS: "[{]" }), (e: Error) => e instanceof ConfigError && /OIDC_PROVIDERS is not valid JSON/.test(e.message));
    assert.deepEqual(loadConfig({ AUTH_DATA_DIR: dir }).sso, []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("OpenID providers always ask for openid, email and profile, with PKCE and verified ID tokens", () => {
  const providers = dev([{ type: "oidc", id: "acme", issuer: "https://idp.acme.example", clientId: "a", clientSecret: "s", scopes: ["groups", "email"] }]);
  const [config] = genericProviderConfigs(providers, false);
  assert.deepEqual(config!.scopes, ["openid", "email", "profile", "groups"]);
  assert.equal(config!.pkce, true);
  assert.equal(config!.requireIdTokenVerification, true);
  assert.equal(config!.disableSignUp, false);
});

test("a service with providers lists them without secrets and redirects with state and PKCE S256", async () => {
  const providers = [
    { type: "google", clientId: "google-client", clientSecret: "google-secret-never-shown" },
    { type: "github", name: "GitHub", clientId: "github-client", clientSecret: "github-secret-never-shown" },
    { type: "microsoft", tenantId: "organizations", clientId: "entra-client", clientSecret: "entra-secret-never-shown" },
  ];
  const service = await startTestService({ OIDC_PROVIDERS: JSON.stringify(providers), TRUSTED_ORIGINS: "http://localhost:5173" });
  try {
    const list = await request(service.url, "GET", "/api/auth/sso/providers");
    assert.equal(list.status, 200);
    assert.deepEqual(list.body, {
      providers: [
        { id: "google", name: "Google", type: "google" },
        { id: "github", name: "GitHub", type: "github" },
        { id: "microsoft", name: "Microsoft", type: "microsoft" },
      ],
    });
    assert.doesNotMatch(JSON.stringify(list.body), /secret/);

    const started = await request(service.url, "POST", "/api/auth/sign-in/social", {
      json: { provider: "google", callbackURL: "http://localhost:5173/", disableRedirect: true },
      headers: { origin: "http://localhost:5173" },
    });
    assert.equal(started.status, 200, JSON.stringify(started.body));
    const url = new URL(started.body.url);
    assert.equal(url.origin, "https://accounts.google.com");
    assert.equal(url.searchParams.get("client_id"), "google-client");
    assert.equal(url.searchParams.get("redirect_uri"), `${BASE_URL}/api/auth/callback/google`);
    assert.equal(url.searchParams.get("code_challenge_method"), "S256");
    assert.match(url.searchParams.get("code_challenge") ?? "", /^[A-Za-z0-9_-]{43}$/);
    assert.ok((url.searchParams.get("state") ?? "").length >= 32, "an unguessable state");
    assert.ok(started.headers.getSetCookie().some((c) => /state/.test(c)), "the state is bound to this browser by a cookie");

    // The other presets go to their own providers, each with its callback.
    const authorizationUrl = async (provider: string) => {
      const answer = await request(service.url, "POST", "/api/auth/sign-in/social", {
        json: { provider, callbackURL: "http://localhost:5173/", disableRedirect: true },
        headers: { origin: "http://localhost:5173" },
      });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      return new URL(answer.body.url);
    };
    const github = await authorizationUrl("github");
    assert.equal(`${github.origin}${github.pathname}`, "https://github.com/login/oauth/authorize");
    assert.equal(github.searchParams.get("redirect_uri"), `${BASE_URL}/api/auth/callback/github`);
    const entra = await authorizationUrl("microsoft");
    assert.equal(`${entra.origin}${entra.pathname}`, "https://login.microsoftonline.com/organizations/oauth2/v2.0/authorize");
    assert.equal(entra.searchParams.get("client_id"), "entra-client");
    assert.equal(entra.searchParams.get("code_challenge_method"), "S256");

    const untrusted = await request(service.url, "POST", "/api/auth/sign-in/social", {
      json: { provider: "google", callbackURL: "https://evil.example/", disableRedirect: true },
      headers: { origin: "http://localhost:5173" },
    });
    assert.equal(untrusted.status, 403, "the app it returns to must be a trusted origin");
    const unknown = await request(service.url, "POST", "/api/auth/sign-in/social", {
      json: { provider: "okta", callbackURL: "http://localhost:5173/", disableRedirect: true },
      headers: { origin: "http://localhost:5173" },
    });
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
  } finally {
    await service.stop();
  }
});

test("without OIDC_PROVIDERS the provider list is empty and social sign-in is refused; adding providers needs no migration", async () => {
  const service = await startTestService({ TRUSTED_ORIGINS: "http://localhost:5173" });
  try {
    // SSO identities are rows of Better Auth's `account` table: no schema of their own.
    const sso = dev([
      { type: "oidc", id: "acme", issuer: "https://idp.acme.example", clientId: "a", clientSecret: "s" },
      { type: "google", clientId: "g", clientSecret: "s" },
    ]);
    assert.deepEqual(await migrate({ ...service.config, sso }, service.database), []);

    const list = await request(service.url, "GET", "/api/auth/sso/providers");
    assert.deepEqual(list.body, { providers: [] });
    const started = await request(service.url, "POST", "/api/auth/sign-in/social", {
      json: { provider: "google", callbackURL: "http://localhost:5173/", disableRedirect: true },
      headers: { origin: "http://localhost:5173" },
    });
    assert.equal(started.status, 404);
  } finally {
    await service.stop();
  }
});
