// Seed-contract routes: /auth/signup, /auth/login, /auth/me, /auth/token, /auth/logout.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import { PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

let svc: TestService;
const call = (method: string, path: string, opts?: Parameters<typeof request>[3]) => request(svc.url, method, path, opts);

function assertError(res: { status: number; body: any }, status: number, code?: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(typeof res.body?.error?.code, "string", JSON.stringify(res.body));
  assert.equal(typeof res.body?.error?.message, "string");
  if (code) assert.equal(res.body.error.code, code);
}

before(async () => {
  svc = await startTestService();
});
after(async () => {
  await svc?.stop();
});

describe("POST /auth/signup", () => {
  test("creates a user and returns an access JWT, a session token and the user", async () => {
    const email = uniqueEmail("signup");
    const res = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Ada Lovelace" } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const { access_token, token_type, expires_in, session_token, user } = res.body;
    assert.equal(token_type, "bearer");
    assert.equal(expires_in, 900);
    assert.equal(typeof session_token, "string");
    assert.deepEqual(Object.keys(user).sort(), ["created_at", "email", "full_name", "id"]);
    assert.equal(user.email, email);
    assert.equal(user.full_name, "Ada Lovelace");
    assert.ok(!Number.isNaN(Date.parse(user.created_at)));
    const claims = decodeJwt(access_token);
    assert.equal(claims.sub, user.id);
    assert.equal(claims.aud, "rag-service");
    assert.equal(claims.iss, "http://localhost:3001");
    assert.equal((claims.exp as number) - (claims.iat as number), 900);
  });

  test("rejects a duplicate email with 409, whatever the case of the address", async () => {
    const email = uniqueEmail("dup");
    const first = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "First" } });
    assert.equal(first.status, 201);
    const again = await call("POST", "/auth/signup", { json: { email, password: "another password", full_name: "Second" } });
    assertError(again, 409, "email_taken");
    const upper = await call("POST", "/auth/signup", { json: { email: email.toUpperCase(), password: PASSWORD, full_name: "Third" } });
    assertError(upper, 409, "email_taken");
    assert.ok(!JSON.stringify(again.body).includes("First"), "the error reveals nothing about the existing account");
  });

  const invalid: Array<[string, unknown]> = [
    ["missing email", { password: PASSWORD, full_name: "X" }],
    ["malformed email", { email: "not-an-email", password: PASSWORD, full_name: "X" }],
    ["email with spaces", { email: "a b@example.com", password: PASSWORD, full_name: "X" }],
    ["password too short (11)", { email: uniqueEmail(), password: "tulip-9-anv", full_name: "X" }],
    ["password too long (129)", { email: uniqueEmail(), password: "p".repeat(129), full_name: "X" }],
    ["password not a string", { email: uniqueEmail(), password: 12345678, full_name: "X" }],
    ["missing full_name", { email: uniqueEmail(), password: PASSWORD }],
    ["empty full_name", { email: uniqueEmail(), password: PASSWORD, full_name: "" }],
    ["blank full_name", { email: uniqueEmail(), password: PASSWORD, full_name: "   " }],
    ["full_name too long (201)", { email: uniqueEmail(), password: PASSWORD, full_name: "n".repeat(201) }],
    ["body is an array", [1, 2]],
  ];
  for (const [name, body] of invalid) {
    test(`422 on ${name}`, async () => {
      assertError(await call("POST", "/auth/signup", { json: body }), 422, "validation_error");
    });
  }

  test("accepts the bounds: password of 12 and 128 characters, full_name of 200", async () => {
    const a = await call("POST", "/auth/signup", { json: { email: uniqueEmail(), password: "tulip-9-anvi", full_name: "n".repeat(200) } });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    const b = await call("POST", "/auth/signup", { json: { email: uniqueEmail(), password: "p".repeat(128), full_name: "B" } });
    assert.equal(b.status, 201, JSON.stringify(b.body));
  });

  test("400 on a body that is not JSON", async () => {
    assertError(await call("POST", "/auth/signup", { body: "{not json" }), 400, "invalid_json");
  });
});

describe("POST /auth/login", () => {
  let email: string;
  before(async () => {
    email = uniqueEmail("login");
    const res = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Grace Hopper" } });
    assert.equal(res.status, 201);
  });

  test("returns tokens and the user for the right password", async () => {
    const res = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.token_type, "bearer");
    assert.equal(res.body.user.email, email);
    assert.equal(res.body.user.full_name, "Grace Hopper");
    assert.equal(decodeJwt(res.body.access_token).sub, res.body.user.id);
    assert.equal(typeof res.body.session_token, "string");
  });

  test("wrong password and unknown email get the same 401", async () => {
    // One request id for both, so that the whole answers can be compared.
    const headers = { "x-request-id": "same-answer" };
    const wrong = await call("POST", "/auth/login", { json: { email, password: "wrong password" }, headers });
    const unknown = await call("POST", "/auth/login", { json: { email: uniqueEmail("nobody"), password: PASSWORD }, headers });
    assertError(wrong, 401, "invalid_credentials");
    assert.deepEqual(unknown.body, wrong.body);
    assert.equal(unknown.status, wrong.status);
  });

  test("422 on invalid input", async () => {
    assertError(await call("POST", "/auth/login", { json: { email: "nope", password: PASSWORD } }), 422, "validation_error");
    assertError(await call("POST", "/auth/login", { json: { email } }), 422, "validation_error");
  });
});

describe("GET /auth/me, POST /auth/token, POST /auth/logout", () => {
  let email: string;
  let session: string;
  let jwt: string;
  let userId: string;
  before(async () => {
    email = uniqueEmail("me");
    const res = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Alan Turing" } });
    ({ session_token: session, access_token: jwt } = res.body);
    userId = res.body.user.id;
  });

  test("/auth/me with the session token", async () => {
    const res = await call("GET", "/auth/me", { token: session });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(Object.keys(res.body).sort(), ["created_at", "email", "full_name", "id"]);
    assert.equal(res.body.id, userId);
    assert.equal(res.body.email, email);
  });

  test("/auth/me with the access JWT", async () => {
    const res = await call("GET", "/auth/me", { token: jwt });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.id, userId);
    assert.equal(res.body.full_name, "Alan Turing");
  });

  test("/auth/me refuses no token, a garbage token and a tampered JWT", async () => {
    assertError(await call("GET", "/auth/me"), 401);
    assertError(await call("GET", "/auth/me", { token: "garbage" }), 401);
    const [h, p, s] = jwt.split(".");
    const payload = JSON.parse(Buffer.from(p!, "base64url").toString());
    payload.sub = "someone-else";
    const forged = [h, Buffer.from(JSON.stringify(payload)).toString("base64url"), s].join(".");
    assertError(await call("GET", "/auth/me", { token: forged }), 401, "invalid_token");
  });

  test("/auth/token mints a new access JWT from the session token", async () => {
    const res = await call("POST", "/auth/token", { token: session });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.token_type, "bearer");
    assert.equal(res.body.expires_in, 900);
    assert.equal(decodeJwt(res.body.access_token).sub, userId);
  });

  test("/auth/token works with Better Auth's session cookie from a trusted origin", async () => {
    const signIn = await fetch(`${svc.url}/api/auth/sign-in/email`, {
      method: "POST",
      // Better Auth's CSRF check wants an Origin from fetch clients (Node's fetch sends Sec-Fetch-Mode).
      headers: { "content-type": "application/json", origin: "http://localhost:3001" },
      body: JSON.stringify({ email, password: PASSWORD }),
    });
    assert.equal(signIn.status, 200);
    const cookie = signIn.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
    assert.match(cookie, /session_token=/);
    const res = await call("POST", "/auth/token", { headers: { cookie, origin: "http://localhost:3001" } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(decodeJwt(res.body.access_token).sub, userId);
  });

  test("/auth/token refuses a missing or unknown session", async () => {
    assertError(await call("POST", "/auth/token"), 401, "unauthorized");
    assertError(await call("POST", "/auth/token", { token: "not-a-session" }), 401, "unauthorized");
  });

  test("/auth/logout revokes the session: no more tokens, no more /auth/me", async () => {
    const login = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
    const s2 = login.body.session_token as string;
    assert.equal((await call("POST", "/auth/token", { token: s2 })).status, 200);
    const out = await call("POST", "/auth/logout", { token: s2 });
    assert.equal(out.status, 200, JSON.stringify(out.body));
    assert.deepEqual(out.body, { success: true });
    assertError(await call("POST", "/auth/token", { token: s2 }), 401, "unauthorized");
    assertError(await call("GET", "/auth/me", { token: s2 }), 401);
    assertError(await call("POST", "/auth/logout", { token: s2 }), 401);
    const res = await fetch(`${svc.url}/api/auth/token`, { headers: { authorization: `Bearer ${s2}` } });
    assert.equal(res.status, 401, "Better Auth's own token route refuses the revoked session too");
    // The other session of the same user is untouched.
    assert.equal((await call("POST", "/auth/token", { token: session })).status, 200);
  });
});

test("unknown routes answer a JSON 404", async () => {
  assertError(await call("GET", "/nope"), 404, "not_found");
});
