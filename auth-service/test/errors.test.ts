// The one error envelope `{"error": {"code", "message", "request_id"}}` on both route families
// (our /auth/* routes and Better Auth's /api/auth/*), and request ids as the rag-service makes
// them: a well-formed X-Request-ID is kept, anything else replaced, echoed on every answer and
// carried by every log line of the request.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BODY_LIMIT_BYTES } from "../src/app.js";
import { withErrorEnvelope } from "../src/http.js";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type JsonResponse, type TestService } from "./helpers.js";

/** Sign-ins per client address and minute in the 429 test. */
const SIGN_IN_LIMIT = 3;
const GENERATED_ID = /^[0-9a-f]{32}$/;

let svc: TestService;
before(async () => {
  svc = await startTestService();
});
after(async () => {
  await svc?.stop();
});

/** The body is exactly the envelope (plus `extra` top-level fields) and names the answer's request id. */
function assertEnvelope(res: JsonResponse, status: number, code: string, extra: Record<string, unknown> = {}) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  const requestId = res.headers.get("x-request-id");
  assert.ok(requestId, "X-Request-ID on the answer");
  const { error, ...rest } = res.body as { error: { code: string; message: string; request_id: string } };
  assert.deepEqual(Object.keys(error).sort(), ["code", "message", "request_id"]);
  assert.equal(error.code, code);
  assert.equal(typeof error.message, "string");
  assert.ok(error.message.length > 0);
  assert.equal(error.request_id, requestId);
  assert.deepEqual(rest, extra);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
}

async function signUp(tag: string): Promise<string> {
  const email = uniqueEmail(tag);
  const res = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "E" } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return email;
}

describe("the error envelope on our own routes", () => {
  test("a wrong password at /auth/login", async () => {
    const email = await signUp("own-401");
    const res = await request(svc.url, "POST", "/auth/login", { json: { email, password: "not the password" } });
    assertEnvelope(res, 401, "invalid_credentials");
  });

  test("invalid input, a body that is not JSON, a missing session", async () => {
    assertEnvelope(await request(svc.url, "POST", "/auth/signup", { json: { email: "nope", password: PASSWORD, full_name: "E" } }), 422, "validation_error");
    assertEnvelope(await request(svc.url, "POST", "/auth/login", { body: "{" }), 400, "invalid_json");
    assertEnvelope(await request(svc.url, "GET", "/auth/me"), 401, "unauthorized");
  });

  test("an unknown route and a body over the limit", async () => {
    assertEnvelope(await request(svc.url, "GET", "/no/such/route"), 404, "not_found");
    assertEnvelope(await request(svc.url, "POST", "/auth/login", { body: JSON.stringify({ pad: "x".repeat(BODY_LIMIT_BYTES) }) }), 413, "payload_too_large");
  });
});

describe("the error envelope on Better Auth's routes", () => {
  test("a wrong password: the envelope, with Better Auth's own code and message kept beside it", async () => {
    const email = await signUp("ba-401");
    const res = await request(svc.url, "POST", "/api/auth/sign-in/email", { json: { email, password: "not the password" }, headers: { origin: BASE_URL } });
    assertEnvelope(res, 401, "invalid_email_or_password", { code: "INVALID_EMAIL_OR_PASSWORD", message: res.body.error.message });
  });

  test("a hook's refusal (the password policy) and a plugin's (organization without a session)", async () => {
    const weak = await request(svc.url, "POST", "/api/auth/sign-up/email", { json: { email: uniqueEmail("weak"), password: "short", name: "W" }, headers: { origin: BASE_URL } });
    assertEnvelope(weak, 400, "invalid_input", { code: "INVALID_INPUT", message: weak.body.error.message });
    const noSession = await request(svc.url, "GET", "/api/auth/organization/list");
    assertEnvelope(noSession, 401, "unauthorized", { code: noSession.body.code, message: noSession.body.message });
  });

  test("an unknown Better Auth route", async () => {
    const res = await request(svc.url, "GET", "/api/auth/no-such-endpoint");
    assert.equal(res.status, 404);
    assert.equal(res.body.error.code, "not_found");
    assert.equal(res.body.error.request_id, res.headers.get("x-request-id"));
  });

  test("429 from the limiter, on both route families, with Retry-After", async () => {
    // Behind a trusted proxy, so that each family is counted for a client address of its own.
    const limited = await startTestService({ AUTH_RATE_LIMIT_SIGNIN_MAX: String(SIGN_IN_LIMIT), TRUSTED_PROXIES: "127.0.0.1" }, undefined, svc);
    try {
      const attempts = async (path: string, ip: string) => {
        // An address of its own too: failures per account are throttled from the fifth on.
        const email = uniqueEmail("ba-429");
        const answers: JsonResponse[] = [];
        for (let i = 0; i <= SIGN_IN_LIMIT; i++) {
          answers.push(await request(limited.url, "POST", path, { json: { email, password: "wrong password!" }, headers: { "x-forwarded-for": ip, origin: BASE_URL } }));
        }
        assert.deepEqual(answers.map((r) => r.status), [...Array(SIGN_IN_LIMIT).fill(401), 429]);
        const last = answers[SIGN_IN_LIMIT]!;
        assert.ok(Number(last.headers.get("retry-after")) > 0, `Retry-After: ${last.headers.get("retry-after")}`);
        return last;
      };
      const direct = await attempts("/api/auth/sign-in/email", "198.51.100.7");
      assertEnvelope(direct, 429, "rate_limited", { message: direct.body.message });
      assertEnvelope(await attempts("/auth/login", "198.51.100.8"), 429, "rate_limited");
    } finally {
      await limited.stop();
    }
  });
});

describe("request ids", () => {
  test("a well-formed X-Request-ID is kept: on the answer and in the error", async () => {
    const id = "edge-1:abc.DEF_42";
    const ok = await request(svc.url, "GET", "/health", { headers: { "x-request-id": id } });
    assert.equal(ok.status, 200);
    assert.equal(ok.headers.get("x-request-id"), id);
    const refused = await request(svc.url, "GET", "/auth/me", { headers: { "x-request-id": id } });
    assertEnvelope(refused, 401, "unauthorized");
    assert.equal(refused.body.error.request_id, id);
    const ba = await request(svc.url, "GET", "/api/auth/organization/list", { headers: { "x-request-id": id } });
    assert.equal(ba.body.error.request_id, id);
    assert.equal(ba.headers.get("x-request-id"), id);
  });

  test("without one, each request gets a new id: 32 hex digits", async () => {
    const first = await request(svc.url, "GET", "/auth/me");
    const second = await request(svc.url, "GET", "/auth/me");
    for (const res of [first, second]) assert.match(res.headers.get("x-request-id") ?? "", GENERATED_ID);
    assert.notEqual(first.headers.get("x-request-id"), second.headers.get("x-request-id"));
  });

  for (const [name, malformed] of [
    ["too long", "a".repeat(129)],
    ["a space", "abc def"],
    ["a slash", "abc/def"],
    ["a quote", 'abc"def'],
    ["non-ASCII", "abcé"],
  ] as const) {
    test(`an X-Request-ID with ${name} is replaced by a new id`, async () => {
      const res = await fetch(`${svc.url}/auth/me`, { headers: { "x-request-id": malformed } });
      const body = (await res.json()) as { error: { request_id: string } };
      assert.match(res.headers.get("x-request-id") ?? "", GENERATED_ID);
      assert.equal(body.error.request_id, res.headers.get("x-request-id"));
    });
  }

  test("128 characters is still well formed", async () => {
    const id = "b".repeat(128);
    assert.equal((await request(svc.url, "GET", "/health", { headers: { "x-request-id": id } })).headers.get("x-request-id"), id);
  });
});

describe("log lines carry the request id", () => {
  test("the access log: one JSON line per request with its id, route and status, no query, no email", async () => {
    const logged = await startTestService({ LOG_LEVEL: "info" }, undefined, svc);
    const email = uniqueEmail("logged");
    const lines: string[] = [];
    const original = console.log;
    console.log = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      await request(logged.url, "POST", "/auth/login", { json: { email, password: "not the password" }, headers: { "x-request-id": "access-log-1" } });
      await request(logged.url, "GET", `/api/auth/verify-email?token=secret-token-value`, { headers: { "x-request-id": "access-log-2" } });
    } finally {
      console.log = original;
      await logged.stop();
    }
    const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((e) => e.logger === "auth_service.access");
    const login = entries.find((e) => e.request_id === "access-log-1");
    assert.ok(login, lines.join("\n"));
    assert.equal(login.level, "info");
    assert.equal(login.method, "POST");
    assert.equal(login.route, "/auth/login");
    assert.equal(login.path, "/auth/login");
    assert.equal(login.status, 401);
    assert.equal(typeof login.latency_ms, "number");
    const verify = entries.find((e) => e.request_id === "access-log-2");
    assert.ok(verify, lines.join("\n"));
    assert.equal(verify.path, "/api/auth/verify-email");
    assert.equal(verify.route, "/api/auth/*");
    const text = lines.join("\n");
    assert.ok(!text.includes(email) && !text.includes("secret-token-value"), text);
  });

  test("no access log at LOG_LEVEL=warn (the test default)", async () => {
    const lines: string[] = [];
    const original = console.log;
    console.log = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      await request(svc.url, "GET", "/health");
    } finally {
      console.log = original;
    }
    assert.deepEqual(lines, []);
  });

  test("a warning written while a request runs names that request", async () => {
    const lines: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      const res = await request(svc.url, "POST", "/auth/token", { headers: { "x-api-key": "rag_" + "c".repeat(64), "x-request-id": "warned-1" } });
      assertEnvelope(res, 401, "invalid_api_key");
    } finally {
      console.warn = original;
    }
    const refusals = lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((e) => e.message === "API key refused: INVALID_API_KEY");
    assert.equal(refusals.length, 1, lines.join("\n"));
    assert.equal(refusals[0]!.request_id, "warned-1");
    assert.equal(refusals[0]!.level, "warn");
  });

  test("outside a request a line has no request id", async () => {
    const { safeLog } = await import("../src/safe-log.js");
    const lines: string[] = [];
    const original = console.warn;
    console.warn = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      safeLog("warn", "start-up note");
    } finally {
      console.warn = original;
    }
    assert.equal(lines.length, 1);
    const entry = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(entry.message, "start-up note");
    assert.equal("request_id" in entry, false);
  });
});

test("a failure inside Better Auth (its database unreachable): a bare 500 envelope, logged with the request id and no address", async () => {
  const { createDatabase } = await import("../src/db.js");
  const { createApp } = await import("../src/app.js");
  const { createAuth } = await import("../src/auth.js");
  const { loadConfig } = await import("../src/config.js");
  const { createMailer } = await import("../src/mailer.js");
  const config = loadConfig({ AUTH_ENV: "test", AUTH_DATA_DIR: "/nonexistent-unused", BETTER_AUTH_SECRET: "x".repeat(40), DATABASE_URL: "postgres://postgres@127.0.0.1:9/nowhere" });
  const database = createDatabase(config);
  const auth = createAuth(config, database);
  // Start-up (the OAuth server's resource seed) fails too, outside any request: let it finish
  // before the request's log lines are collected.
  await auth.$context;
  const app = createApp({ config, auth, database, mailer: createMailer(config) });
  const email = uniqueEmail("db-down");
  const lines: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
  let res: Response;
  try {
    res = await app.fetch(new Request("http://localhost:3001/api/auth/sign-in/email", {
      method: "POST",
      headers: { "content-type": "application/json", origin: "http://localhost:3001", "x-request-id": "db-down-1" },
      body: JSON.stringify({ email, password: PASSWORD }),
    }));
  } finally {
    console.error = original;
    await database.close();
  }
  assert.equal(res.status, 500);
  assert.deepEqual(await res.json(), { error: { code: "internal_error", message: "internal server error", request_id: "db-down-1" } });
  assert.ok(lines.length >= 1, "the failure is logged");
  for (const line of lines) {
    const entry = JSON.parse(line) as Record<string, unknown>;
    assert.equal(entry.level, "error");
    assert.equal(entry.request_id, "db-down-1", line);
  }
  assert.ok(!lines.join("\n").includes(email), lines.join("\n"));
});

describe("withErrorEnvelope (what /api/auth/* answers go through)", () => {
  test("an OAuth 2.0 error (RFC 6749 5.2) passes unchanged: OAuth clients parse it", async () => {
    const oauth = { error: "invalid_grant", error_description: "the code has expired" };
    const res = await withErrorEnvelope(Response.json(oauth, { status: 400, headers: { "x-extra": "kept" } }));
    assert.equal(res.status, 400);
    assert.deepEqual(await res.json(), oauth);
    assert.equal(res.headers.get("x-extra"), "kept");
  });

  test("a 5xx keeps nothing of Better Auth's body", async () => {
    const res = await withErrorEnvelope(Response.json({ code: "FAILED_TO_CREATE_USER", message: "relation \"user\" does not exist" }, { status: 500 }));
    assert.equal(res.status, 500);
    assert.deepEqual(await res.json(), { error: { code: "internal_error", message: "internal server error", request_id: null } });
  });

  test("a body that is not JSON gets the status's code; success answers are untouched", async () => {
    const empty = await withErrorEnvelope(new Response("Not Found", { status: 404, headers: { "content-type": "text/plain" } }));
    assert.deepEqual(await empty.json(), { error: { code: "not_found", message: "not found", request_id: null } });
    assert.equal(empty.headers.get("content-type"), "application/json");
    const ok = new Response("fine", { status: 200 });
    assert.equal(await withErrorEnvelope(ok), ok);
  });
});
