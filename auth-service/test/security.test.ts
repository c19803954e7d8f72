// Rate limiting (both route families, Retry-After, no X-Forwarded-For bypass), CORS, /health.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BASE_URL, PASSWORD, redisAnswers, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const LIMIT = 3;
const TRUSTED = "http://app.example:5173";

function assert429(res: { status: number; headers: Headers; body: any }) {
  assert.equal(res.status, 429, JSON.stringify(res.body));
  const retry = Number(res.headers.get("retry-after"));
  assert.ok(Number.isInteger(retry) && retry > 0 && retry <= 60, `Retry-After: ${res.headers.get("retry-after")}`);
}

// One database for the file; the other instances (own configuration) share it.
let svc: TestService;
before(async () => {
  svc = await startTestService({ AUTH_RATE_LIMIT_SIGNIN_MAX: String(LIMIT), AUTH_RATE_LIMIT_SIGNIN_WINDOW: "60" });
});
after(async () => {
  await svc?.stop();
});

describe("rate limiting", () => {
  let email: string;
  before(async () => {
    email = uniqueEmail("rl");
    assert.equal((await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "R" } })).status, 201);
  });

  test("repeated failed logins via /auth/login get 429 with Retry-After", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT; i++) {
      statuses.push((await request(svc.url, "POST", "/auth/login", { json: { email, password: "wrong password" } })).status);
    }
    assert.deepEqual(statuses, Array(LIMIT).fill(401));
    const limited = await request(svc.url, "POST", "/auth/login", { json: { email, password: "wrong password" } });
    assert429(limited);
    assert.equal(limited.body.error.code, "rate_limited");
    // Even the right password is refused while limited.
    assert429(await request(svc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } }));
  });

  test("Better Auth's /api/auth/sign-in/email shares the same limit and also sends Retry-After", async () => {
    const res = await request(svc.url, "POST", "/api/auth/sign-in/email", { json: { email, password: "wrong password" }, headers: { origin: BASE_URL } });
    assert429(res);
    assert.ok(res.headers.get("x-retry-after"));
  });

  test("a spoofed X-Forwarded-For does not open a new bucket", async () => {
    const res = await request(svc.url, "POST", "/auth/login", {
      json: { email, password: "wrong password" },
      headers: { "x-forwarded-for": "203.0.113.9", "x-auth-client-ip": "203.0.113.10" },
    });
    assert429(res);
  });

  test("sign-up is limited too (via both routes)", async () => {
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT + 1; i++) {
      const res = await request(svc.url, "POST", "/auth/signup", { json: { email: uniqueEmail("rl-su"), password: PASSWORD, full_name: "S" } });
      statuses.push(res.status);
      if (res.status === 429) assert429(res);
    }
    // The sign-up in before() used one of the LIMIT attempts of this client.
    assert.deepEqual(statuses, [...Array(LIMIT - 1).fill(201), 429, 429]);
    assert429(
      await request(svc.url, "POST", "/api/auth/sign-up/email", {
        json: { email: uniqueEmail(), password: PASSWORD, name: "S" },
        headers: { origin: BASE_URL },
      }),
    );
  });

  test("the limit is per client: another client IP (via a trusted proxy) still gets through", async () => {
    const other = await startTestService({ AUTH_RATE_LIMIT_SIGNIN_MAX: String(LIMIT), TRUSTED_PROXIES: "127.0.0.1" }, undefined, svc);
    try {
      const login = (ip: string) =>
        request(other.url, "POST", "/auth/login", { json: { email: "x@example.com", password: "wrong password" }, headers: { "x-forwarded-for": ip } });
      for (let i = 0; i < LIMIT; i++) assert.equal((await login("198.51.100.1")).status, 401);
      assert429(await login("198.51.100.1"));
      assert.equal((await login("198.51.100.2")).status, 401, "a different client behind the proxy has its own bucket");
    } finally {
      await other.stop();
    }
  });
});

describe("rate limiting in Redis (REDIS_URL)", () => {
  test("limits are kept in Redis and shared by instances", async (t) => {
    const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/15";
    if (!(await redisAnswers(t, redisUrl))) return;
    const redisSvc = await startTestService({ REDIS_URL: redisUrl, AUTH_RATE_LIMIT_SIGNIN_MAX: String(LIMIT), AUTH_RATE_LIMIT_SIGNIN_WINDOW: "30" }, undefined, svc);
    try {
      const email = uniqueEmail("redis");
      const { Redis } = await import("ioredis");
      const redis = new Redis(redisUrl);
      const signIn = `${redisSvc.config.redisKeyPrefix}*sign-in*`;
      assert.deepEqual(await redis.keys(signIn), [], "a prefix of its own");
      for (let i = 0; i < LIMIT; i++) assert.equal((await request(redisSvc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } })).status, 401);
      assert429(await request(redisSvc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } }));
      const stored = await redis.keys(signIn);
      assert.ok(stored.length >= 1, "the counter lives in Redis");
      await redis.del(...stored);
      redis.disconnect();
      assert.equal((await request(redisSvc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } })).status, 401, "cleared in Redis -> allowed again");
    } finally {
      await redisSvc.stop();
    }
  });
});

describe("CORS and /health", () => {
  let cors: TestService;
  before(async () => {
    cors = await startTestService({ TRUSTED_ORIGINS: `${TRUSTED},http://other.example` }, undefined, svc);
  });
  after(async () => {
    await cors?.stop();
  });

  for (const path of ["/api/auth/sign-in/email", "/auth/login"]) {
    test(`preflight on ${path}: trusted origin gets credentials, untrusted gets nothing`, async () => {
      const pre = (origin: string) =>
        fetch(cors.url + path, {
          method: "OPTIONS",
          headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
        });
      const ok = await pre(TRUSTED);
      assert.equal(ok.headers.get("access-control-allow-origin"), TRUSTED);
      assert.equal(ok.headers.get("access-control-allow-credentials"), "true");
      assert.match(ok.headers.get("access-control-allow-methods") ?? "", /POST/);
      const bad = await pre("http://evil.example");
      assert.equal(bad.headers.get("access-control-allow-origin"), null);
      assert.equal(bad.headers.get("access-control-allow-credentials"), null);
    });
  }

  test("actual requests: trusted origin gets CORS headers, untrusted does not", async () => {
    const trusted = await request(cors.url, "GET", "/api/auth/jwks", { headers: { origin: TRUSTED } });
    assert.equal(trusted.headers.get("access-control-allow-origin"), TRUSTED);
    assert.equal(trusted.headers.get("access-control-allow-credentials"), "true");
    const untrusted = await request(cors.url, "POST", "/auth/login", { json: { email: "a@b.co", password: PASSWORD }, headers: { origin: "http://evil.example" } });
    assert.equal(untrusted.headers.get("access-control-allow-origin"), null);
    assert.equal(untrusted.headers.get("access-control-allow-credentials"), null);
  });

  test("a trusted browser origin can sign up with cookies through Better Auth", async () => {
    const res = await request(cors.url, "POST", "/api/auth/sign-up/email", {
      json: { email: uniqueEmail("cors"), password: PASSWORD, name: "C" },
      headers: { origin: TRUSTED },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("access-control-allow-origin"), TRUSTED);
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /set-auth-token/i);
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /X-Request-ID/i);
  });

  test("/health is ok while the database answers, 503 degraded when it does not", async () => {
    const ok = await request(cors.url, "GET", "/health");
    assert.equal(ok.status, 200);
    assert.deepEqual(ok.body, { status: "ok", services: { database: true } });
    // Last use of the shared database in this file.
    await svc.database.close();
    const down = await request(cors.url, "GET", "/health");
    assert.equal(down.status, 503);
    assert.deepEqual(down.body, { status: "degraded", services: { database: false } });
  });
});

test("/health reports an unreachable Postgres as degraded", async () => {
  const { createDatabase } = await import("../src/db.js");
  const { createApp } = await import("../src/app.js");
  const { createAuth } = await import("../src/auth.js");
  const { loadConfig } = await import("../src/config.js");
  const config = loadConfig({ AUTH_ENV: "test", AUTH_DATA_DIR: "/nonexistent-unused", BETTER_AUTH_SECRET: "x".repeat(40), DATABASE_URL: "postgres://postgres@127.0.0.1:9/nowhere" });
  const { createMailer } = await import("../src/mailer.js");
  const database = createDatabase(config);
  const mailer = createMailer(config);
  const app = createApp({ config, auth: createAuth(config, database), database, mailer });
  const res = await app.fetch(new Request("http://localhost/health"));
  assert.equal(res.status, 503);
  assert.deepEqual(await res.json(), { status: "degraded", services: { database: false } });
  await database.close();
});
