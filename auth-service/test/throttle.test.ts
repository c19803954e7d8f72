// Per-account throttling of failed sign-ins (many source addresses), IPv6 /64 buckets, the
// contract routes under the per-IP limiter, /api/auth/jwks never limited, and the Redis store
// failing open when Redis is down.
import assert from "node:assert/strict";
import { after, before, describe, test, type TestContext } from "node:test";
import { lockSeconds } from "../src/account-throttle.js";
import { PASSWORD, redisAnswers, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const THRESHOLD = 3;
const THROTTLE_ENV = {
  TRUSTED_PROXIES: "127.0.0.1",
  AUTH_ACCOUNT_LOCK_THRESHOLD: String(THRESHOLD),
  AUTH_ACCOUNT_LOCK_BASE_SECONDS: "1",
  AUTH_ACCOUNT_LOCK_MAX_SECONDS: "8",
};
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/15";

let svc: TestService;
before(async () => {
  svc = await startTestService(THROTTLE_ENV);
});
after(async () => {
  await svc?.stop();
});

let ipCounter = 0;
/** A new client address per call (documentation ranges, behind the trusted loopback proxy). */
function nextIp(): string {
  ipCounter++;
  return `198.51.${Math.floor(ipCounter / 250) % 250}.${(ipCounter % 250) + 1}`;
}

const login = (s: TestService, email: string, password: string, ip = nextIp()) =>
  request(s.url, "POST", "/auth/login", { json: { email, password }, headers: { "x-forwarded-for": ip } });

function retryAfter(res: { status: number; headers: Headers; body: unknown }): number {
  assert.equal(res.status, 429, JSON.stringify(res.body));
  const value = Number(res.headers.get("retry-after"));
  assert.ok(Number.isInteger(value) && value >= 1, `Retry-After: ${res.headers.get("retry-after")}`);
  return value;
}

async function signUp(s: TestService, tag: string): Promise<string> {
  const email = uniqueEmail(tag);
  const res = await request(s.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "T" }, headers: { "x-forwarded-for": nextIp() } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return email;
}

/**
 * The account-throttle scenario, on whichever store `s` uses. The service runs in this process:
 * its clock (Date) is the test's mock, moved past the back-off instead of waiting for it.
 */
async function accountScenario(t: TestContext, s: TestService) {
  t.mock.timers.enable({ apis: ["Date"], now: Date.now() });
  const email = await signUp(s, "acct");
  const bystander = await signUp(s, "bystander");
  for (let i = 0; i < THRESHOLD; i++) assert.equal((await login(s, email, "wrong password!")).status, 401);
  // A new address, even with the right password (and in other case), is held back now.
  const wait = retryAfter(await login(s, email.toUpperCase(), PASSWORD));
  assert.ok(wait <= 1);
  assert.equal((await request(s.url, "POST", "/api/auth/sign-in/email", { json: { email, password: PASSWORD }, headers: { "x-forwarded-for": nextIp() } })).status, 429);
  // Other accounts are untouched.
  assert.equal((await login(s, bystander, PASSWORD)).status, 200);
  // Once the back-off has passed, the owner signs in at once.
  t.mock.timers.tick(wait * 1000);
  assert.equal((await login(s, email, PASSWORD)).status, 200);
  // Success cleared the count: one more failure is a plain 401, not a 429.
  assert.equal((await login(s, email, "wrong password!")).status, 401);
  assert.equal((await login(s, email, PASSWORD)).status, 200);
}

describe("per-account throttling", () => {
  test("failed sign-ins from many addresses lock the account with a back-off; the owner gets in once it passes", async (t) => {
    await accountScenario(t, svc);
  });

  test("unknown emails are counted the same way (no difference between existing and unknown accounts)", async () => {
    const email = uniqueEmail("ghost");
    for (let i = 0; i < THRESHOLD; i++) assert.equal((await login(svc, email, "wrong password!")).status, 401);
    retryAfter(await login(svc, email, "wrong password!"));
  });

  test("the back-off doubles with each failure past the threshold, up to the maximum", () => {
    const policy = { threshold: 3, baseSeconds: 30, maxSeconds: 900, windowSeconds: 900 };
    const now = 1_000_000_000;
    assert.equal(lockSeconds({ failures: 2, lastFailure: now }, policy, now), 0);
    assert.equal(lockSeconds({ failures: 3, lastFailure: now }, policy, now), 30);
    assert.equal(lockSeconds({ failures: 4, lastFailure: now }, policy, now), 60);
    assert.equal(lockSeconds({ failures: 6, lastFailure: now }, policy, now), 240);
    assert.equal(lockSeconds({ failures: 40, lastFailure: now }, policy, now), 900);
    assert.equal(lockSeconds({ failures: 3, lastFailure: now }, policy, now + 29_500), 1);
    assert.equal(lockSeconds({ failures: 3, lastFailure: now }, policy, now + 30_000), 0);
  });

  test("database store (AUTH_RATE_LIMIT_STORAGE=database): the same, counted in auth_account_throttle", async (t) => {
    const dbSvc = await startTestService({ ...THROTTLE_ENV, AUTH_RATE_LIMIT_STORAGE: "database" }, undefined, svc);
    try {
      await accountScenario(t, dbSvc);
    } finally {
      await dbSvc.stop();
    }
  });

  test("Redis store: the same, counted in Redis", async (t) => {
    if (!(await redisAnswers(t, REDIS_URL))) return;
    const redisSvc = await startTestService({ ...THROTTLE_ENV, REDIS_URL }, undefined, svc);
    try {
      await accountScenario(t, redisSvc);
    } finally {
      await redisSvc.stop();
    }
  });
});

describe("per-IP limits", () => {
  test("IPv6 clients of one /64 share a bucket; another /64 has its own", async () => {
    const limited = await startTestService({ TRUSTED_PROXIES: "127.0.0.1", AUTH_RATE_LIMIT_SIGNIN_MAX: "2", AUTH_ACCOUNT_LOCK_THRESHOLD: "100" }, undefined, svc);
    try {
      const email = uniqueEmail("v6");
      assert.equal((await login(limited, email, "wrong password!", "2001:db8:aa:bb::1")).status, 401);
      assert.equal((await login(limited, email, "wrong password!", "2001:db8:aa:bb:ffff:1:2:3")).status, 401);
      retryAfter(await login(limited, email, "wrong password!", "2001:db8:aa:bb::99"));
      assert.equal((await login(limited, email, "wrong password!", "2001:db8:aa:bc::1")).status, 401);
    } finally {
      await limited.stop();
    }
  });

  test("/auth/me, /auth/token and /auth/logout go through the limiter; /api/auth/jwks never does", async () => {
    const session = (await request(svc.url, "POST", "/auth/signup", { json: { email: uniqueEmail("lim"), password: PASSWORD, full_name: "L" }, headers: { "x-forwarded-for": nextIp() } })).body.session_token;
    const limited = await startTestService({ TRUSTED_PROXIES: "127.0.0.1", AUTH_RATE_LIMIT_MAX: "2", AUTH_RATE_LIMIT_WINDOW: "60" }, undefined, svc);
    try {
      for (const [method, path, expected] of [
        ["GET", "/auth/me", [200, 200, 429]],
        ["POST", "/auth/token", [200, 200, 429]],
        ["POST", "/auth/logout", [200, 401, 429]],
      ] as const) {
        const ip = nextIp();
        const statuses = [];
        for (let i = 0; i < 3; i++) statuses.push((await request(limited.url, method, path, { token: session, headers: { "x-forwarded-for": ip } })).status);
        assert.deepEqual(statuses, expected, path);
      }
      const ip = nextIp();
      for (let i = 0; i < 10; i++) {
        assert.equal((await request(limited.url, "GET", "/api/auth/jwks", { headers: { "x-forwarded-for": ip } })).status, 200);
      }
    } finally {
      await limited.stop();
    }
  });
});

describe("Redis down", () => {
  test("the limiter fails open: sign-up, sign-in and JWKS still answer, a warning is logged and counted", async () => {
    // A closed port: every Redis command fails at once.
    const down = await startTestService({ ...THROTTLE_ENV, REDIS_URL: "redis://127.0.0.1:1/0" }, undefined, svc);
    const warnings: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => void warnings.push(args.map(String).join(" "));
    try {
      const email = await signUp(down, "redis-down");
      assert.equal((await login(down, email, PASSWORD)).status, 200);
      assert.equal((await login(down, email, "wrong password!")).status, 401);
      assert.equal((await request(down.url, "GET", "/api/auth/jwks")).status, 200);
      const health = await request(down.url, "GET", "/health");
      assert.equal(health.body.rate_limit.store, "redis");
      assert.ok(health.body.rate_limit.fail_open >= 3, JSON.stringify(health.body));
    } finally {
      console.warn = original;
      await down.stop();
    }
    assert.ok(warnings.some((w) => /store unavailable, allowing the request/.test(w)), warnings.join("\n"));
  });
});
