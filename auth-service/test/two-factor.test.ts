// Two-factor codes against a real service and database, with the codes computed by an
// independent TOTP implementation (the `otpauth` package, from the otpauth:// URI the service
// hands out), never by the service's own helper: set-up confirmed by a first code, the contract
// login that never answers a token before the code, replayed codes and reused backup codes
// refused (also when raced), wrong codes throttled per account, disabling with the password.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import * as OTPAuth from "otpauth";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const THRESHOLD = 3;
let svc: TestService;

before(async () => {
  svc = await startTestService({
    TRUSTED_PROXIES: "127.0.0.1",
    AUTH_ACCOUNT_LOCK_THRESHOLD: String(THRESHOLD),
    AUTH_ACCOUNT_LOCK_BASE_SECONDS: "60",
  });
});
after(async () => {
  await svc?.stop();
});

let ipCounter = 0;
/** A new client address per call: these tests are about the per-account limits, not the per-IP ones. */
const nextIp = () => `203.0.113.${(ipCounter++ % 250) + 1}`;
const call = (method: string, path: string, opts: Parameters<typeof request>[3] = {}) =>
  request(svc.url, method, path, { ...opts, headers: { "x-forwarded-for": nextIp(), ...opts.headers } });

interface Enrolled {
  email: string;
  userId: string;
  session: string;
  totp: OTPAuth.TOTP;
  backupCodes: string[];
  /** Codes this account has already signed in or confirmed with. */
  used: Set<string>;
}

/** A new account with two-factor codes enabled and confirmed with the current code. */
async function enrolled(tag: string): Promise<Enrolled> {
  const email = uniqueEmail(tag);
  const signup = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Two Factor" } });
  assert.equal(signup.status, 201, JSON.stringify(signup.body));
  const session = signup.body.session_token as string;
  const enable = await call("POST", "/api/auth/two-factor/enable", { json: { password: PASSWORD }, token: session });
  assert.equal(enable.status, 200, JSON.stringify(enable.body));
  const totp = OTPAuth.URI.parse(enable.body.totpURI) as OTPAuth.TOTP;
  assert.ok(totp instanceof OTPAuth.TOTP);
  // The enabling call (and its password) changed the session; the new token is in the header.
  const current = enable.headers.get("set-auth-token") || session;
  const code = totp.generate();
  const confirm = await call("POST", "/api/auth/two-factor/verify-totp", { json: { code }, token: current });
  assert.equal(confirm.status, 200, JSON.stringify(confirm.body));
  return { email, userId: signup.body.user.id, session: confirm.headers.get("set-auth-token") || current, totp, backupCodes: enable.body.backupCodes, used: new Set([code]) };
}

/** POST /auth/login for a 2FA account: the challenge token (and proof that nothing else came back). */
async function challenge(email: string): Promise<string> {
  const res = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.equal(res.body.error.code, "two_factor_required");
  assert.equal(res.body.access_token, undefined);
  assert.equal(res.body.session_token, undefined);
  assert.deepEqual(res.body.two_factor.methods, ["totp", "backup_code"]);
  return res.body.two_factor.token as string;
}

const finish = (token: string, body: Record<string, string>) =>
  call("POST", "/auth/login/two-factor", { json: { two_factor_token: token, ...body } });

/** A code of the period `offset` steps from now (the service accepts the previous, current and next). */
const codeAt = (totp: OTPAuth.TOTP, offset: number) => totp.generate({ timestamp: Date.now() + offset * totp.period * 1000 });

/** A valid code the account has not used yet (marked used): the next period's, else the previous or current one's. */
function freshCode(who: Enrolled): string {
  const code = [1, -1, 0].map((offset) => codeAt(who.totp, offset)).find((c) => !who.used.has(c));
  assert.ok(code, "every code of the accepted window is used: the test ran across too many periods");
  who.used.add(code);
  return code;
}

describe("setting up two-factor codes", () => {
  test("the password is required, the URI is a TOTP secret, and only a correct first code turns it on", async () => {
    const email = uniqueEmail("setup");
    const signup = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "S" } });
    const session = signup.body.session_token as string;
    const wrong = await call("POST", "/api/auth/two-factor/enable", { json: { password: "not the password" }, token: session });
    assert.equal(wrong.status, 400);
    assert.equal(wrong.body.error.code, "invalid_password");

    const enable = await call("POST", "/api/auth/two-factor/enable", { json: { password: PASSWORD }, token: session });
    assert.equal(enable.status, 200, JSON.stringify(enable.body));
    assert.match(enable.body.totpURI, /^otpauth:\/\/totp\//);
    const totp = OTPAuth.URI.parse(enable.body.totpURI) as OTPAuth.TOTP;
    assert.equal(totp.digits, 6);
    assert.equal(totp.period, 30);
    assert.equal(totp.label, email);
    assert.equal(enable.body.backupCodes.length, 10);
    assert.equal(new Set(enable.body.backupCodes).size, 10);

    // Not confirmed yet: the password alone still signs in.
    const early = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
    assert.equal(early.status, 200, JSON.stringify(early.body));
    const current = early.body.session_token as string;
    const bad = await call("POST", "/api/auth/two-factor/verify-totp", { json: { code: codeAt(totp, 5) }, token: current });
    assert.equal(bad.status, 401);
    assert.equal((await call("POST", "/auth/login", { json: { email, password: PASSWORD } })).status, 200);

    const ok = await call("POST", "/api/auth/two-factor/verify-totp", { json: { code: totp.generate() }, token: current });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    await challenge(email);
  });
});

describe("the contract login of a two-factor account", () => {
  test("never answers a token before the code; a code finishes it with the same tokens as a password login", async () => {
    const who = await enrolled("contract");
    const res = await call("POST", "/auth/login", { json: { email: who.email, password: PASSWORD } });
    assert.equal(res.status, 401);
    // Nothing in the answer is a usable credential: no token fields, and any session token header is dead.
    assert.equal(JSON.stringify(res.body).includes("access_token"), false);
    const leaked = res.headers.get("set-auth-token");
    if (leaked) assert.equal((await call("POST", "/auth/token", { token: leaked })).status, 401);
    // The challenge token is not a session either.
    assert.equal((await call("POST", "/auth/token", { token: res.body.two_factor.token })).status, 401);

    const done = await finish(res.body.two_factor.token, { code: freshCode(who) });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.token_type, "bearer");
    assert.equal(decodeJwt(done.body.access_token).sub, who.userId);
    assert.equal(done.body.user.email, who.email);
    const me = await call("GET", "/auth/me", { token: done.body.access_token });
    assert.equal(me.status, 200);
    assert.equal((await call("POST", "/auth/token", { token: done.body.session_token })).status, 200);
    // A finished challenge is spent.
    const again = await finish(res.body.two_factor.token, { code: codeAt(who.totp, -1) });
    assert.equal(again.status, 401);
    assert.equal(again.body.error.code, "two_factor_expired");
  });

  test("a wrong password still answers invalid_credentials (no challenge, nothing about the second factor)", async () => {
    const who = await enrolled("wrongpw");
    const res = await call("POST", "/auth/login", { json: { email: who.email, password: "not the password" } });
    assert.equal(res.status, 401);
    assert.equal(res.body.error.code, "invalid_credentials");
    assert.equal(res.body.two_factor, undefined);
  });

  test("Better Auth's own sign-in asks for the code and opens no session before it", async () => {
    const who = await enrolled("native");
    const signIn = await fetch(`${svc.url}/api/auth/sign-in/email`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: BASE_URL, "x-forwarded-for": nextIp() },
      body: JSON.stringify({ email: who.email, password: PASSWORD }),
    });
    assert.equal(signIn.status, 200);
    assert.deepEqual(await signIn.json(), { twoFactorRedirect: true, twoFactorMethods: ["totp"] });
    const cookies = signIn.headers.getSetCookie().map((c) => c.split(";")[0]!);
    assert.ok(!cookies.some((c) => /session_token=[^;]+/.test(c)), cookies.join("; "));
    const cookie = cookies.filter((c) => c.includes("two_factor=")).join("; ");
    const verify = await call("POST", "/api/auth/two-factor/verify-totp", { json: { code: freshCode(who) }, headers: { cookie, origin: BASE_URL } });
    assert.equal(verify.status, 200, JSON.stringify(verify.body));
    assert.ok(verify.headers.get("set-auth-token"));
  });

  test("malformed finishing requests are refused before anything is checked", async () => {
    const token = await challenge((await enrolled("bad-input")).email);
    for (const body of [{ code: "12345" }, { code: "1234567" }, { code: "12a456" }, {}, { code: "123456", backup_code: "abcde-12345" }, { backup_code: "a;b" }]) {
      const res = await finish(token, body as Record<string, string>);
      assert.equal(res.status, 422, JSON.stringify([body, res.body]));
    }
    for (const bad of ["short", "x".repeat(600), "abcdefghijklmnopqrstuvwxyz; better-auth.session_token=forged"]) {
      const res = await call("POST", "/auth/login/two-factor", { json: { two_factor_token: bad, code: "123456" } });
      assert.equal(res.status, 422);
    }
    // A well-formed but forged token.
    const forged = await call("POST", "/auth/login/two-factor", { json: { two_factor_token: "2fa-forgedforgedforged.c2lnbmF0dXJl", code: "123456" } });
    assert.equal(forged.status, 401);
    assert.equal(forged.body.error.code, "two_factor_expired");
  });
});

describe("codes are single use", () => {
  test("a code that signed in once is refused in the next sign-in (replay), while a fresh one works", async () => {
    const who = await enrolled("replay");
    const [confirmation] = who.used;
    const code = freshCode(who);
    assert.equal((await finish(await challenge(who.email), { code })).status, 200);
    const replay = await finish(await challenge(who.email), { code });
    assert.equal(replay.status, 401);
    assert.equal(replay.body.error.code, "invalid_code");
    // The code that confirmed the set-up is spent too.
    assert.equal((await finish(await challenge(who.email), { code: confirmation! })).status, 401);
    assert.equal((await finish(await challenge(who.email), { code: freshCode(who) })).status, 200);
  });

  test("the same code raced in two sign-ins opens exactly one session", async () => {
    const who = await enrolled("race-totp");
    const code = freshCode(who);
    const [a, b] = await Promise.all([challenge(who.email), challenge(who.email)]);
    const results = await Promise.all([finish(a, { code }), finish(b, { code })]);
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 401], JSON.stringify(results.map((r) => r.body)));
  });

  test("a backup code signs in once; the others stay valid", async () => {
    const who = await enrolled("backup");
    const [first, second] = who.backupCodes;
    const done = await finish(await challenge(who.email), { backup_code: first! });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(decodeJwt(done.body.access_token).sub, who.userId);
    const reuse = await finish(await challenge(who.email), { backup_code: first! });
    assert.equal(reuse.status, 401);
    assert.equal(reuse.body.error.code, "invalid_code");
    assert.equal((await finish(await challenge(who.email), { backup_code: second! })).status, 200);
  });

  test("the same backup code raced in two sign-ins opens exactly one session", async () => {
    const who = await enrolled("race-backup");
    const code = who.backupCodes[0]!;
    const [a, b] = await Promise.all([challenge(who.email), challenge(who.email)]);
    const results = await Promise.all([finish(a, { backup_code: code }), finish(b, { backup_code: code })]);
    // The loser read the codes before or after the winner's write: either way its code was spent.
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 401], JSON.stringify(results.map((r) => r.body)));
  });
});

describe("wrong codes are throttled per account", () => {
  test(`after ${THRESHOLD} wrong codes even the right one waits (429 + Retry-After), from any address; other accounts are untouched`, async () => {
    const who = await enrolled("throttle");
    const bystander = await enrolled("bystander");
    const token = await challenge(who.email);
    for (let i = 0; i < THRESHOLD; i++) {
      // Codes from far-away periods: well-formed, never valid now.
      const res = await finish(token, { code: codeAt(who.totp, 100 + i) });
      assert.equal(res.status, 401, JSON.stringify(res.body));
      assert.equal(res.body.error.code, "invalid_code");
    }
    // A new challenge (the password is right) does not reset the count: it is the account's.
    const locked = await finish(await challenge(who.email), { code: freshCode(who) });
    assert.equal(locked.status, 429, JSON.stringify(locked.body));
    const wait = Number(locked.headers.get("retry-after"));
    assert.ok(wait >= 1 && wait <= 60, `Retry-After: ${locked.headers.get("retry-after")}`);
    // Better Auth's own route is held back the same way.
    const signIn = await fetch(`${svc.url}/api/auth/sign-in/email`, {
      method: "POST",
      headers: { "content-type": "application/json", origin: BASE_URL, "x-forwarded-for": nextIp() },
      body: JSON.stringify({ email: who.email, password: PASSWORD }),
    });
    const cookie = signIn.headers.getSetCookie().map((c) => c.split(";")[0]!).join("; ");
    const native = await call("POST", "/api/auth/two-factor/verify-totp", { json: { code: freshCode(who) }, headers: { cookie, origin: BASE_URL } });
    assert.equal(native.status, 429);
    assert.equal(native.body.error.code, "two_factor_throttled");
    assert.equal((await finish(await challenge(bystander.email), { code: freshCode(bystander) })).status, 200);
  });
});

describe("turning two-factor codes off", () => {
  test("needs the password; afterwards the password alone signs in again", async () => {
    const who = await enrolled("disable");
    const wrong = await call("POST", "/api/auth/two-factor/disable", { json: { password: "not the password" }, token: who.session });
    assert.equal(wrong.status, 400);
    await challenge(who.email);
    const off = await call("POST", "/api/auth/two-factor/disable", { json: { password: PASSWORD }, token: who.session });
    assert.equal(off.status, 200, JSON.stringify(off.body));
    const login = await call("POST", "/auth/login", { json: { email: who.email, password: PASSWORD } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.ok(login.body.access_token);
  });
});
