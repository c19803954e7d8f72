// Credentials: the password policy, signed bearer session tokens, CSRF on the cookie paths of the
// contract routes, and access JWTs that stop working at /auth/me when their session ends.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const TRUSTED = "http://app.example:5173";
let svc: TestService;

before(async () => {
  svc = await startTestService({ TRUSTED_ORIGINS: TRUSTED });
});
after(async () => {
  await svc?.stop();
});

async function signUp(tag: string) {
  const email = uniqueEmail(tag);
  const res = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Cred User" } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return { email, session: res.body.session_token as string, jwt: res.body.access_token as string };
}

/** A Better Auth cookie session (browser sign-in from a trusted origin). */
async function cookieFor(email: string): Promise<string> {
  const res = await fetch(`${svc.url}/api/auth/sign-in/email`, {
    method: "POST",
    headers: { "content-type": "application/json", origin: TRUSTED },
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  assert.equal(res.status, 200);
  return res.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
}

describe("password policy", () => {
  // Better Auth's route: 400 for the policy, 422 for control characters (src/input-policy.ts).
  const weak: [password: string, status: number][] = [
    ["password", 400],
    ["12345678", 400],
    [" ".repeat(8), 400],
    [" ".repeat(12), 400],
    ["\t".repeat(12), 422],
    ["qwerty123456", 400],
    ["QWERTY123456", 400],
    ["elevenchars", 400],
  ];
  for (const [password, status] of weak) {
    test(`refuses ${JSON.stringify(password)} on both sign-up routes`, async () => {
      const contract = await request(svc.url, "POST", "/auth/signup", { json: { email: uniqueEmail("weak"), password, full_name: "W" } });
      assert.equal(contract.status, 422, JSON.stringify(contract.body));
      assert.equal(contract.body.error.code, "validation_error");
      const own = await request(svc.url, "POST", "/api/auth/sign-up/email", { json: { email: uniqueEmail("weak"), password, name: "W" }, headers: { origin: BASE_URL } });
      assert.equal(own.status, status, JSON.stringify(own.body));
      assert.equal(own.body.error.code, "invalid_input");
    });
  }

  test("change-password refuses a common new password and accepts a good one", async () => {
    const { email } = await signUp("chpw");
    const cookie = await cookieFor(email);
    const change = (newPassword: string) =>
      request(svc.url, "POST", "/api/auth/change-password", { json: { currentPassword: PASSWORD, newPassword }, headers: { cookie, origin: TRUSTED } });
    assert.equal((await change("1q2w3e4r5t6y")).status, 400);
    assert.equal((await change("a much better passphrase")).status, 200);
  });

  test("login checks a password under the new minimum instead of refusing it as invalid input (older accounts)", async () => {
    // Login validation only bounds the length from above: a 401, not a 422.
    const res = await request(svc.url, "POST", "/auth/login", { json: { email: uniqueEmail("nobody"), password: "short" } });
    assert.equal(res.status, 401);
  });
});

describe("signed bearer session tokens", () => {
  test("the session token clients get is signed, and the raw database token is not a bearer", async () => {
    const { session } = await signUp("signed");
    const [raw, signature] = session.split(".");
    assert.ok(raw && signature, "session_token is <token>.<signature>");
    assert.equal((await request(svc.url, "POST", "/auth/token", { token: session })).status, 200);
    assert.equal((await request(svc.url, "GET", "/auth/me", { token: session })).status, 200);
    assert.equal((await request(svc.url, "POST", "/auth/token", { token: raw })).status, 401);
    assert.equal((await request(svc.url, "GET", "/auth/me", { token: raw })).status, 401);
    const own = await request(svc.url, "GET", "/api/auth/get-session", { token: raw });
    assert.equal(own.body, null, "Better Auth's own route does not accept it either");
  });

  test("login returns a signed session token as well", async () => {
    const { email } = await signUp("signed-login");
    const res = await request(svc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } });
    assert.equal(res.status, 200);
    assert.equal(res.body.session_token.split(".").length, 2);
  });
});

describe("CSRF: cookie requests to /auth/logout and /auth/token", () => {
  for (const path of ["/auth/logout", "/auth/token"]) {
    test(`${path}: an untrusted or missing Origin is refused with 403 and changes nothing`, async () => {
      const { email } = await signUp("csrf");
      const cookie = await cookieFor(email);
      const attempts: Record<string, string>[] = [{ cookie, origin: "http://evil.example" }, { cookie }, { cookie, origin: "null" }, { cookie, referer: "http://evil.example/page" }];
      for (const headers of attempts) {
        const res = await request(svc.url, "POST", path, { headers });
        assert.equal(res.status, 403, `${JSON.stringify(headers)} -> ${JSON.stringify(res.body)}`);
        assert.equal(res.body.error.code, "invalid_origin");
      }
      // The session is still alive.
      assert.equal((await request(svc.url, "GET", "/api/auth/get-session", { headers: { cookie } })).body?.user?.email, email.toLowerCase());
    });

    test(`${path}: a trusted Origin (TRUSTED_ORIGINS or the service's own) is accepted`, async () => {
      const { email } = await signUp("csrf-ok");
      for (const origin of [TRUSTED, BASE_URL]) {
        const cookie = await cookieFor(email);
        const res = await request(svc.url, "POST", path, { headers: { cookie, origin } });
        assert.equal(res.status, 200, JSON.stringify(res.body));
      }
    });

    test(`${path}: a bearer session token needs no Origin, whatever the cookie`, async () => {
      const { session } = await signUp("csrf-bearer");
      const res = await request(svc.url, "POST", path, { token: session, headers: { origin: "http://evil.example", cookie: "x=y" } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
    });
  }

  test("a cross-origin logout leaves the session usable for /auth/token afterwards", async () => {
    const { email } = await signUp("csrf-after");
    const cookie = await cookieFor(email);
    assert.equal((await request(svc.url, "POST", "/auth/logout", { headers: { cookie, origin: "http://evil.example" } })).status, 403);
    assert.equal((await request(svc.url, "POST", "/auth/token", { headers: { cookie, origin: TRUSTED } })).status, 200);
  });
});

describe("access JWT and its session", () => {
  test("/auth/me refuses an access JWT once its session has logged out; other sessions' JWTs still work", async () => {
    const { email, session, jwt } = await signUp("jwt-logout");
    const other = await request(svc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } });
    assert.equal((await request(svc.url, "GET", "/auth/me", { token: jwt })).status, 200);
    assert.equal((await request(svc.url, "POST", "/auth/logout", { token: session })).status, 200);
    const me = await request(svc.url, "GET", "/auth/me", { token: jwt });
    assert.equal(me.status, 401, JSON.stringify(me.body));
    assert.equal(me.body.error.code, "invalid_token");
    assert.equal((await request(svc.url, "GET", "/auth/me", { token: other.body.access_token })).status, 200);
  });
});
