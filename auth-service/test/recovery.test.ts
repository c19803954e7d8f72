// Password reset (mails caught by a real SMTP server), password change and sessions:
// - reset: the same answer and time for known and unknown addresses, single-use tokens that
//   expire after PASSWORD_RESET_EXPIRES_IN (1 h), limits per address and per IP, and a reset
//   ends every session of the account;
// - change-password ends every other session, whatever revokeOtherSessions the client sends;
// - sessions are listed (created, updated, user agent) and revoked, with bearer tokens.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { assertWellFormed, fragmentValue, median, startInbox, timeAlternately, type Inbox } from "./mail-support.js";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const APP_URL = "http://localhost:5173/";
const NEW_PASSWORD = "a brand new passphrase";
let inbox: Inbox;
let svc: TestService;

function client(service: () => TestService) {
  // Node's fetch sends Sec-Fetch-Mode, so Better Auth asks it for a trusted Origin, as from a browser.
  return (method: string, path: string, opts: Parameters<typeof request>[3] = {}) =>
    request(service().url, method, path, { ...opts, headers: { origin: BASE_URL, ...opts.headers } });
}
const call = client(() => svc);

before(async () => {
  inbox = await startInbox();
  svc = await startTestService({ SMTP_URL: inbox.smtpUrl, APP_URL });
});
after(async () => {
  await svc?.stop();
  await inbox?.close();
});

async function account(tag: string) {
  const email = uniqueEmail(tag);
  const res = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: tag } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return { email, userId: res.body.user.id as string, session: res.body.session_token as string };
}

async function login(email: string, password = PASSWORD, userAgent = "test-agent") {
  return call("POST", "/auth/login", { json: { email, password }, headers: { "user-agent": userAgent } });
}

const alive = async (session: string) => (await call("POST", "/auth/token", { token: session })).status === 200;

async function resetLink(email: string): Promise<string> {
  await svc.mailer.idle();
  const mails = inbox.to(email).filter((m) => /Reset your password/.test(m.subject)).length;
  const res = await call("POST", "/api/auth/request-password-reset", { json: { email } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  await svc.mailer.idle();
  const all = inbox.to(email).filter((m) => /Reset your password/.test(m.subject));
  assert.equal(all.length, mails + 1, "one reset mail per request");
  return all.at(-1)!.link;
}

describe("password reset", () => {
  test("the mailed link sets a new password once, and every session of the account ends", async () => {
    const { email, session } = await account("reset");
    const second = (await login(email)).body.session_token as string;
    const link = await resetLink(email);
    const mail = inbox.to(email).at(-1)!;
    assertWellFormed(mail, APP_URL);
    assert.match(mail.text, /works once, for 1 hour/);
    const token = fragmentValue(link, "reset-password");

    const res = await call("POST", "/api/auth/reset-password", { json: { token, newPassword: NEW_PASSWORD } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(await alive(session), false, "the sign-up session ended");
    assert.equal(await alive(second), false, "the other session ended");
    assert.equal((await login(email)).status, 401, "the old password no longer works");
    assert.equal((await login(email, NEW_PASSWORD)).status, 200);

    const again = await call("POST", "/api/auth/reset-password", { json: { token, newPassword: "yet another passphrase" } });
    assert.equal(again.status, 400, "a token works once");
    assert.equal(again.body.error.code, "invalid_token");
    assert.equal((await login(email, NEW_PASSWORD)).status, 200);
  });

  test("a token expires after PASSWORD_RESET_EXPIRES_IN (1 h) and is then refused", async () => {
    const { email, userId } = await account("expiry");
    const requestedAt = Date.now();
    const token = fragmentValue(await resetLink(email), "reset-password");
    const { rows } = await sql<{ expiresAt: Date | string; identifier: string }>`
      select "expiresAt", identifier from verification where value = ${userId}`.execute(svc.database.db);
    assert.equal(rows.length, 1);
    assert.ok(!rows[0]!.identifier.includes(token), "the token is stored hashed");
    const lifetime = new Date(rows[0]!.expiresAt).getTime() - requestedAt;
    assert.ok(Math.abs(lifetime - 3_600_000) < 60_000, `lifetime ${lifetime} ms`);
    // An hour later, as far as the stored expiry is concerned.
    await sql`update verification set "expiresAt" = ${new Date(Date.now() - 1000).toISOString()} where value = ${userId}`.execute(svc.database.db);
    const res = await call("POST", "/api/auth/reset-password", { json: { token, newPassword: NEW_PASSWORD } });
    assert.equal(res.status, 400);
    assert.equal(res.body.error.code, "invalid_token");
    assert.equal((await login(email)).status, 200, "the password is unchanged");
  });

  test("two concurrent uses of one token: exactly one sets the password", async () => {
    const { email } = await account("race");
    const token = fragmentValue(await resetLink(email), "reset-password");
    const results = await Promise.all(
      ["first racing passphrase", "second racing passphrase"].map((newPassword) =>
        call("POST", "/api/auth/reset-password", { json: { token, newPassword } })),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 400], JSON.stringify(results.map((r) => r.body)));
    const winner = results[0]!.status === 200 ? "first racing passphrase" : "second racing passphrase";
    const loser = winner.startsWith("first") ? "second racing passphrase" : "first racing passphrase";
    assert.equal((await login(email, winner)).status, 200);
    assert.equal((await login(email, loser)).status, 401);
  });

  test("known and unknown addresses: same status, same body, comparable time, mail only to the known one", async () => {
    const { email } = await account("known");
    const unknown = uniqueEmail("unknown");
    const known = await call("POST", "/api/auth/request-password-reset", { json: { email } });
    const nobody = await call("POST", "/api/auth/request-password-reset", { json: { email: unknown } });
    assert.equal(known.status, 200);
    assert.equal(nobody.status, known.status);
    assert.deepEqual(nobody.body, known.body);
    const times = await timeAlternately(
      15,
      () => call("POST", "/api/auth/request-password-reset", { json: { email } }),
      () => call("POST", "/api/auth/request-password-reset", { json: { email: unknown } }),
    );
    const ratio = median(times.a) / median(times.b);
    console.log(`reset request median: known ${median(times.a).toFixed(1)} ms, unknown ${median(times.b).toFixed(1)} ms, ratio ${ratio.toFixed(2)}`);
    assert.ok(ratio > 1 / 3 && ratio < 3, `known/unknown median ratio ${ratio.toFixed(2)}`);
    await svc.mailer.idle();
    assert.equal(inbox.to(unknown).length, 0);
    assert.equal(inbox.to(email).filter((m) => /Reset your password/.test(m.subject)).length, 16);
  });

  test("a bad token, a weak new password: clear 400s, nothing changes", async () => {
    const { email } = await account("badreset");
    const token = fragmentValue(await resetLink(email), "reset-password");
    const guessed = await call("POST", "/api/auth/reset-password", { json: { token: "x".repeat(24), newPassword: NEW_PASSWORD } });
    assert.equal(guessed.status, 400);
    assert.equal(guessed.body.error.code, "invalid_token");
    const weak = await call("POST", "/api/auth/reset-password", { json: { token, newPassword: "password1234" } });
    assert.equal(weak.status, 400, JSON.stringify(weak.body));
    assert.equal((await login(email)).status, 200);
    assert.equal((await call("POST", "/api/auth/reset-password", { json: { token, newPassword: NEW_PASSWORD } })).status, 200, "the token survived the refusals");
  });
});

describe("limits on mail-sending routes", () => {
  let limited: TestService;
  // Better Auth's in-memory limiter is shared by every instance in this process: this client
  // comes through a trusted proxy from an address of its own, so other tests' requests do not count.
  const viaProxy = client(() => limited);
  const limitedCall = (method: string, path: string, opts: Parameters<typeof request>[3] = {}) =>
    viaProxy(method, path, { ...opts, headers: { "x-forwarded-for": "203.0.113.77", ...opts.headers } });
  before(async () => {
    limited = await startTestService({
      SMTP_URL: inbox.smtpUrl, APP_URL, TRUSTED_PROXIES: "127.0.0.1",
      AUTH_RATE_LIMIT_MAIL_MAX: "4", AUTH_RATE_LIMIT_MAIL_WINDOW: "600", MAIL_PER_ADDRESS_MAX: "2",
    });
  });
  after(async () => {
    await limited?.stop();
  });

  test("per address: the same answer every time, at most MAIL_PER_ADDRESS_MAX mails; per IP: 429 with Retry-After", async () => {
    const email = uniqueEmail("capped");
    const signup = await limitedCall("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Capped" } });
    assert.equal(signup.status, 201);
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await limitedCall("POST", "/api/auth/request-password-reset", { json: { email } }));
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.deepEqual(a.body, answers[0]!.body);
    }
    await limited.mailer.idle();
    assert.equal(inbox.to(email).filter((m) => /Reset/.test(m.subject)).length, 2);
    assert.equal((await limitedCall("POST", "/api/auth/request-password-reset", { json: { email: uniqueEmail("other") } })).status, 200);
    const refused = await limitedCall("POST", "/api/auth/request-password-reset", { json: { email: uniqueEmail("other") } });
    assert.equal(refused.status, 429);
    assert.ok(Number(refused.headers.get("retry-after")) > 0);
    const elsewhere = await viaProxy("POST", "/api/auth/request-password-reset", { json: { email: uniqueEmail("other") }, headers: { "x-forwarded-for": "198.51.100.9" } });
    assert.equal(elsewhere.status, 200, "another address is not limited");
  });
});

describe("change-password", () => {
  test("ends every other session even when the client asks to keep them; the caller continues with the new token", async () => {
    const { email, session } = await account("changer");
    const other = (await login(email)).body.session_token as string;
    const res = await call("POST", "/api/auth/change-password", {
      token: session,
      json: { currentPassword: PASSWORD, newPassword: NEW_PASSWORD, revokeOtherSessions: false },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(await alive(other), false, "the other session ended");
    const next = res.headers.get("set-auth-token");
    assert.ok(next, "the caller gets a new session token");
    assert.equal(await alive(next), true);
    assert.equal((await login(email, NEW_PASSWORD)).status, 200);
  });

  test("a wrong current password changes nothing and ends nothing", async () => {
    const { email, session } = await account("wrongchange");
    const other = (await login(email)).body.session_token as string;
    const res = await call("POST", "/api/auth/change-password", { token: session, json: { currentPassword: "not my password", newPassword: NEW_PASSWORD } });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(await alive(other), true);
    assert.equal(await alive(session), true);
  });
});

describe("sessions (bearer tokens)", () => {
  test("list with created, updated and user agent; revoke one; revoke all others", async () => {
    const { email, session: first } = await account("sessions");
    const b = await login(email, PASSWORD, "Browser B");
    const c = await login(email, PASSWORD, "Browser C");
    const listed = await call("GET", "/api/auth/list-sessions", { token: first });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.equal(listed.body.length, 3);
    for (const s of listed.body) {
      assert.ok(!Number.isNaN(Date.parse(s.createdAt)) && !Number.isNaN(Date.parse(s.updatedAt)), JSON.stringify(s));
    }
    assert.deepEqual(listed.body.map((s: { userAgent: string }) => s.userAgent).filter((ua: string) => ua.startsWith("Browser")).sort(), ["Browser B", "Browser C"]);

    const target = listed.body.find((s: { userAgent: string }) => s.userAgent === "Browser B");
    const revoked = await call("POST", "/api/auth/revoke-session", { token: first, json: { token: target.token } });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.equal(await alive(b.body.session_token), false);
    assert.equal(await alive(c.body.session_token), true);
    assert.equal(await alive(first), true);

    const others = await call("POST", "/api/auth/revoke-other-sessions", { token: first, json: {} });
    assert.equal(others.status, 200, JSON.stringify(others.body));
    assert.equal(await alive(c.body.session_token), false);
    assert.equal(await alive(first), true);
    assert.equal((await call("GET", "/api/auth/list-sessions", { token: first })).body.length, 1);
  });

  test("nobody lists or revokes someone else's sessions", async () => {
    const owner = await account("victim");
    const attacker = await account("attacker");
    const theirs = (await call("GET", "/api/auth/list-sessions", { token: owner.session })).body[0].token as string;
    const mine = await call("GET", "/api/auth/list-sessions", { token: attacker.session });
    assert.ok(!JSON.stringify(mine.body).includes(owner.userId));
    await call("POST", "/api/auth/revoke-session", { token: attacker.session, json: { token: theirs } });
    assert.equal(await alive(owner.session), true);
    assert.equal((await call("GET", "/api/auth/list-sessions")).status, 401);
  });
});
