// API keys (Better Auth's API-key plugin): create / list / revoke at /auth/api-keys for a signed-in
// user, and the key -> access JWT exchange at POST /auth/token with `x-api-key`.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { createRemoteJWKSet, jwtVerify } from "jose";
import { sql } from "kysely";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const schema = JSON.parse(readFileSync(new URL("../../shared-schemas/jwt-claims.schema.json", import.meta.url), "utf8"));
const validateClaims = new Ajv2020({ allErrors: true, strict: true }).compile(schema);

let svc: TestService;
const call = (method: string, path: string, opts?: Parameters<typeof request>[3]) => request(svc.url, method, path, opts);

before(async () => {
  svc = await startTestService({ API_KEY_RATE_LIMIT_MAX: "5", API_KEY_RATE_LIMIT_WINDOW: "3600" });
});
after(async () => {
  await svc?.stop();
});

async function signUp(tag: string) {
  const res = await call("POST", "/auth/signup", { json: { email: uniqueEmail(tag), password: PASSWORD, full_name: "Key Holder" } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return { session: res.body.session_token as string, userId: res.body.user.id as string };
}

async function createKey(session: string, body: Record<string, unknown>) {
  return call("POST", "/auth/api-keys", { token: session, json: body });
}

async function exchange(key: string) {
  return call("POST", "/auth/token", { headers: { "x-api-key": key } });
}

async function verify(token: string) {
  const jwks = createRemoteJWKSet(new URL(`${svc.url}/api/auth/jwks`));
  return (await jwtVerify(token, jwks, { algorithms: ["EdDSA"], audience: "rag-service", issuer: BASE_URL })).payload;
}

function assertError(res: { status: number; body: any }, status: number, code: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body?.error?.code, code, JSON.stringify(res.body));
  assert.equal(typeof res.body.error.message, "string");
}

describe("creating, listing and revoking keys", () => {
  test("a key is shown once, listed without its secret, stored hashed", async () => {
    const { session } = await signUp("create");
    const res = await createKey(session, { name: "laptop sync", scope: "write", expires_in_days: 30 });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const { id, key, name, scope, start, expires_at } = res.body;
    assert.equal(name, "laptop sync");
    assert.equal(scope, "write");
    assert.match(key, /^rag_[A-Za-z0-9]{64}$/);
    assert.ok(key.startsWith(start), "start is the key's first characters");
    const days = (Date.parse(expires_at) - Date.now()) / 86_400_000;
    assert.ok(days > 29.9 && days <= 30, `expires in ${days} days`);

    const list = await call("GET", "/auth/api-keys", { token: session });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.keys.map((k: any) => [k.id, k.name, k.scope]), [[id, "laptop sync", "write"]]);
    assert.ok(!JSON.stringify(list.body).includes(key), "the list never carries the key");

    const rows = await sql<{ key: string }>`select key from apikey where id = ${id}`.execute(svc.database.db);
    assert.equal(rows.rows.length, 1);
    assert.notEqual(rows.rows[0].key, key);
    assert.ok(!rows.rows[0].key.includes(key.slice(4, 20)), "the stored value is a hash");
  });

  test("a user sees only their own keys and cannot revoke another's", async () => {
    const alice = await signUp("alice");
    const bob = await signUp("bob");
    const aliceKey = (await createKey(alice.session, { name: "alice", scope: "read" })).body;
    await createKey(bob.session, { name: "bob", scope: "read" });
    const bobList = await call("GET", "/auth/api-keys", { token: bob.session });
    assert.deepEqual(bobList.body.keys.map((k: any) => k.name), ["bob"]);
    assertError(await call("DELETE", `/auth/api-keys/${aliceKey.id}`, { token: bob.session }), 404, "not_found");
    assert.equal((await exchange(aliceKey.key)).status, 200, "alice's key still works");
  });

  test("bad input is a 422 and creates nothing", async () => {
    const { session } = await signUp("bad");
    for (const body of [
      { name: "x", scope: "admin" },
      { name: "x" },
      { name: "", scope: "read" },
      { name: "x".repeat(65), scope: "read" },
      { name: "x", scope: "read", expires_in_days: 0 },
      { name: "x", scope: "read", expires_in_days: 366 },
      { name: "x", scope: "read", expires_in_days: "7" },
    ]) {
      assertError(await createKey(session, body), 422, "validation_error");
    }
    assertError(await call("POST", "/auth/api-keys", { token: session, body: "{not json" }), 400, "invalid_json");
    assert.deepEqual((await call("GET", "/auth/api-keys", { token: session })).body.keys, []);
  });

  test("key routes need a session; an API key or access JWT is not one", async () => {
    const { session } = await signUp("nosession");
    const { key } = (await createKey(session, { name: "k", scope: "write" })).body;
    assertError(await call("GET", "/auth/api-keys"), 401, "unauthorized");
    assertError(await call("POST", "/auth/api-keys", { json: { name: "k", scope: "write" } }), 401, "unauthorized");
    assert.equal((await call("GET", "/auth/api-keys", { headers: { "x-api-key": key } })).status, 401);
    const jwt = (await exchange(key)).body.access_token;
    assert.equal((await call("POST", "/auth/api-keys", { token: jwt, json: { name: "escalate", scope: "write" } })).status, 401);
  });

  test("Better Auth's own create route cannot choose permissions, and its keys are read-only", async () => {
    const { session } = await signUp("raw");
    const denied = await call("POST", "/api/auth/api-key/create", { token: session, json: { name: "raw", permissions: { rag: ["write"] } } });
    assert.equal(denied.status, 400, JSON.stringify(denied.body));
    const made = await call("POST", "/api/auth/api-key/create", { token: session, json: { name: "raw" } });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const claims = await verify((await exchange(made.body.key)).body.access_token);
    assert.equal(claims.scope, "read");
  });
});

describe("POST /auth/token with x-api-key", () => {
  test("returns a short-lived JWT with the key's scope and no session id", async () => {
    const { session, userId } = await signUp("exchange");
    for (const scope of ["read", "write"]) {
      const { key } = (await createKey(session, { name: scope, scope })).body;
      const res = await exchange(key);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.token_type, "bearer");
      assert.equal(res.body.expires_in, 900);
      const claims = await verify(res.body.access_token);
      assert.deepEqual(Object.keys(claims).sort(), ["aud", "exp", "iat", "iss", "scope", "sub"]);
      assert.equal(claims.sub, userId);
      assert.equal(claims.scope, scope);
      assert.ok(validateClaims(claims), JSON.stringify(validateClaims.errors));
    }
  });

  test("the schema allows only read and write as scope", () => {
    const base = { sub: "u", iss: "i", aud: "a", exp: 1, iat: 1 };
    assert.ok(validateClaims({ ...base, scope: "read" }));
    assert.ok(validateClaims({ ...base, scope: "write" }));
    assert.ok(!validateClaims({ ...base, scope: "admin" }));
  });

  test("a revoked key is refused at the next exchange", async () => {
    const { session } = await signUp("revoke");
    const { id, key } = (await createKey(session, { name: "ci", scope: "write" })).body;
    assert.equal((await exchange(key)).status, 200);
    const revoked = await call("DELETE", `/auth/api-keys/${id}`, { token: session });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assertError(await exchange(key), 401, "invalid_api_key");
    assert.deepEqual((await call("GET", "/auth/api-keys", { token: session })).body.keys, []);
  });

  test("an expired key is refused", async () => {
    const { session } = await signUp("expired");
    const { id, key } = (await createKey(session, { name: "old", scope: "read", expires_in_days: 1 })).body;
    assert.equal((await exchange(key)).status, 200);
    await sql`update apikey set "expiresAt" = now() - interval '1 minute' where id = ${id}`.execute(svc.database.db);
    assertError(await exchange(key), 401, "invalid_api_key");
  });

  test("a refused key is logged as a warning naming the refusal, never the key; no error", async () => {
    const { session } = await signUp("logged");
    const { id, key } = (await createKey(session, { name: "old", scope: "read", expires_in_days: 1 })).body;
    await sql`update apikey set "expiresAt" = now() - interval '1 minute' where id = ${id}`.execute(svc.database.db);
    const unknown = "rag_" + "b".repeat(64);
    const lines: { level: string; text: string }[] = [];
    const { error, warn } = console;
    console.error = (...args: unknown[]) => void lines.push({ level: "error", text: args.map(String).join(" ") });
    console.warn = (...args: unknown[]) => void lines.push({ level: "warn", text: args.map(String).join(" ") });
    try {
      assertError(await exchange(key), 401, "invalid_api_key");
      assertError(await exchange(unknown), 401, "invalid_api_key");
    } finally {
      Object.assign(console, { error, warn });
    }
    const text = JSON.stringify(lines);
    assert.deepEqual(lines.filter((l) => l.level === "error"), [], text);
    const warnings = lines.filter((l) => l.level === "warn").map((l) => JSON.parse(l.text) as { level: string; message: string });
    assert.ok(warnings.some((l) => l.level === "warn" && l.message === "API key refused: KEY_EXPIRED"), text);
    assert.ok(warnings.some((l) => l.level === "warn" && l.message === "API key refused: INVALID_API_KEY"), text);
    for (const secret of [key, unknown]) assert.ok(!text.includes(secret.slice(4, 20)), "no key material in the log");
  });

  test("unknown, empty and oversized keys are a 401", async () => {
    for (const key of ["rag_" + "a".repeat(64), "", "x".repeat(5000)]) {
      assertError(await exchange(key), 401, "invalid_api_key");
    }
  });

  test("each key has its own rate limit (429 with Retry-After), other keys unaffected", async () => {
    const { session } = await signUp("limited");
    const busy = (await createKey(session, { name: "busy", scope: "read" })).body.key;
    const quiet = (await createKey(session, { name: "quiet", scope: "read" })).body.key;
    for (let i = 0; i < 5; i++) assert.equal((await exchange(busy)).status, 200, `exchange ${i + 1}`);
    const limited = await exchange(busy);
    assertError(limited, 429, "rate_limited");
    assert.ok(Number(limited.headers.get("retry-after")) > 0);
    assert.equal((await exchange(quiet)).status, 200);
  });

  test("an API key never opens a Better Auth session (enableSessionForAPIKeys is off)", async () => {
    const { session } = await signUp("nosess");
    const { key } = (await createKey(session, { name: "k", scope: "read" })).body;
    const res = await call("GET", "/api/auth/token", { headers: { "x-api-key": key } });
    assert.equal(res.status, 401, "no unscoped JWT from a key");
    const got = await call("GET", "/api/auth/get-session", { headers: { "x-api-key": key } });
    assert.equal(got.body, null);
  });
});

describe("the exchange goes through Better Auth's per-IP limiter", () => {
  let limited: TestService;
  before(async () => {
    // Behind a "proxy" (the test itself) so this client has an address of its own: the limiter's
    // memory store is shared by every service in this process.
    limited = await startTestService({ AUTH_RATE_LIMIT_MAX: "3", AUTH_RATE_LIMIT_WINDOW: "600", TRUSTED_PROXIES: "127.0.0.1" });
  });
  after(async () => {
    await limited?.stop();
  });

  test("guessing keys from one address is cut off with 429", async () => {
    const statuses = [];
    for (let i = 0; i < 4; i++) {
      const headers = { "x-api-key": `rag_guess${i}`, "x-forwarded-for": `198.51.100.${process.pid % 250}` };
      const res = await request(limited.url, "POST", "/auth/token", { headers });
      statuses.push(res.status);
      if (res.status === 429) assertError(res, 429, "rate_limited");
    }
    assert.deepEqual(statuses, [401, 401, 401, 429]);
  });
});
