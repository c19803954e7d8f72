// Email verification with EMAIL_VERIFICATION=required, every mail caught by a real SMTP server:
// the sign-up mail and its link, no session before it is followed (403 EMAIL_NOT_VERIFIED on
// both sign-in routes, each with a fresh mail), resend, no account enumeration at sign-up
// (status, body and time), links that expire, a change of email that verifies the new address
// first; and the optional mode the development and test defaults use.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { SignJWT } from "jose";
import { fragmentValue, assertWellFormed, median, startInbox, timeAlternately, type Inbox } from "./mail-support.js";
import { BASE_URL, PASSWORD, request, startTestService, TEST_SECRET, uniqueEmail, type TestService } from "./helpers.js";
import { VERIFICATION_SENT } from "../src/routes.js";

const APP_URL = "http://app.example:5173/?auth=x&rag=y";
let inbox: Inbox;
let svc: TestService;
// Node's fetch sends Sec-Fetch-Mode, so Better Auth asks it for a trusted Origin, as from a browser.
const call = (method: string, path: string, opts: Parameters<typeof request>[3] = {}) =>
  request(svc.url, method, path, { ...opts, headers: { origin: BASE_URL, ...opts.headers } });

before(async () => {
  inbox = await startInbox();
  svc = await startTestService({ SMTP_URL: inbox.smtpUrl, MAIL_FROM: "Tests <auth@example.com>", EMAIL_VERIFICATION: "required", APP_URL });
});
after(async () => {
  await svc?.stop();
  await inbox?.close();
});

const signUp = (email: string, name = "Verifier") => call("POST", "/api/auth/sign-up/email", { json: { email, password: PASSWORD, name } });
const signIn = (email: string, password = PASSWORD) => call("POST", "/api/auth/sign-in/email", { json: { email, password } });

/** Follows a verification link as the app does: GET /api/auth/verify-email?token=... */
async function follow(link: string) {
  return call("GET", `/api/auth/verify-email?token=${encodeURIComponent(fragmentValue(link, "verify-email"))}`);
}

describe("sign-up, the verification mail, sign-in", () => {
  test("the mail's link verifies the address and opens a session; sign-in then works", async () => {
    const email = uniqueEmail("verify");
    const res = await signUp(email);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.token, null, "no session before verification");
    assert.equal(res.headers.get("set-auth-token"), null);

    const mail = await inbox.next(email, /Confirm your email address/);
    assert.match(mail.from, /^"?Tests"? <auth@example.com>$/);
    assertWellFormed(mail, APP_URL);
    assert.ok(mail.link.startsWith("http://app.example:5173/?auth=x&rag=y#verify-email="), mail.link);

    const verified = await follow(mail.link);
    assert.equal(verified.status, 200, JSON.stringify(verified.body));
    const session = verified.headers.get("set-auth-token");
    assert.ok(session, "following the link signs the person in");
    const me = await call("GET", "/auth/me", { token: session });
    assert.equal(me.body.email, email);
    assert.equal((await signIn(email)).status, 200);
    const login = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.equal((await follow(mail.link)).status, 200, "following the link again changes nothing");
  });

  test("an unverified account gets 403 with a clear code on both sign-in routes, and a fresh mail each time", async () => {
    const email = uniqueEmail("unverified");
    await signUp(email);
    await inbox.next(email, /Confirm/);
    const ba = await signIn(email);
    assert.equal(ba.status, 403, JSON.stringify(ba.body));
    assert.equal(ba.body.error.code, "email_not_verified");
    const contract = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
    assert.equal(contract.status, 403, JSON.stringify(contract.body));
    assert.equal(contract.body.error.code, "email_not_verified");
    await svc.mailer.idle();
    assert.equal(inbox.to(email).length, 3, "the sign-up mail and one per refused sign-in");
    const wrong = await call("POST", "/auth/login", { json: { email, password: "a wrong password" } });
    assert.equal(wrong.status, 401, "a wrong password is a wrong password, verified or not");
    await svc.mailer.idle();
    assert.equal(inbox.to(email).length, 3, "and sends nothing");
    // The newest link works like the first.
    assert.equal((await follow(inbox.to(email).at(-1)!.link)).status, 200);
    assert.equal((await signIn(email)).status, 200);
  });

  test("resend: the same answer for an unverified, a verified and an unknown address; only the first gets mail", async () => {
    const unverified = uniqueEmail("resend");
    await signUp(unverified);
    await inbox.next(unverified, /Confirm/);
    const verified = uniqueEmail("resend-done");
    await signUp(verified);
    await follow((await inbox.next(verified, /Confirm/)).link);
    const unknown = uniqueEmail("resend-nobody");
    const answers = [];
    for (const email of [unverified, verified, unknown]) {
      answers.push(await call("POST", "/api/auth/send-verification-email", { json: { email } }));
    }
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.deepEqual(a.body, answers[0]!.body);
    }
    await svc.mailer.idle();
    assert.equal(inbox.to(unverified).length, 2);
    assert.equal(inbox.to(verified).length, 1);
    assert.equal(inbox.to(unknown).length, 0);
  });

  test("an expired link is refused (TOKEN_EXPIRED) and verifies nothing; the mailed token lives EMAIL_VERIFICATION_EXPIRES_IN", async () => {
    const email = uniqueEmail("expired");
    await signUp(email);
    const mail = await inbox.next(email, /Confirm/);
    const token = fragmentValue(mail.link, "verify-email");
    const claims = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
    assert.equal(claims.exp - claims.iat, 86_400);
    // The same token as issued, but past its expiry (what the clock would show a day later).
    const expired = await new SignJWT({ email }).setProtectedHeader({ alg: "HS256" }).setIssuedAt(claims.iat - 90_000).setExpirationTime(claims.iat - 3_600).sign(new TextEncoder().encode(TEST_SECRET));
    const res = await call("GET", `/api/auth/verify-email?token=${expired}`);
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.equal(res.body.error.code, "token_expired");
    assert.equal((await signIn(email)).status, 403, "still unverified");
    const forged = await new SignJWT({ email }).setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h").sign(new TextEncoder().encode("x".repeat(48)));
    assert.equal((await call("GET", `/api/auth/verify-email?token=${forged}`)).status, 401, "a token signed with another secret");
  });
});

describe("no account enumeration at sign-up", () => {
  test("Better Auth's route: same status and body shape for a new and a registered address; the owner is told", async () => {
    const taken = uniqueEmail("taken");
    await signUp(taken, "Original Owner");
    await follow((await inbox.next(taken, /Confirm/)).link);
    const fresh = uniqueEmail("fresh");
    const a = await signUp(fresh, "Someone");
    const b = await signUp(taken, "Someone");
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    const shape = (body: any) => ({ ...body, user: { ...body.user, id: typeof body.user.id, createdAt: typeof body.user.createdAt, updatedAt: typeof body.user.updatedAt, email: "-" } });
    assert.deepEqual(shape(b.body), shape(a.body));
    assert.equal(b.body.user.name, "Someone", "nothing of the registered account shows");
    assert.equal(b.body.user.emailVerified, false);
    const notice = await inbox.next(taken, /Someone tried to sign up/);
    assertWellFormed(notice, APP_URL);
    assert.ok(notice.link.endsWith("#forgot-password"), notice.link);
    await inbox.next(fresh, /Confirm your email address/);
    assert.equal((await signIn(taken)).status, 200, "the registered account is untouched (its password still works)");
  });

  test("the contract route answers 202 with one body for both, in comparable time", async () => {
    const taken = uniqueEmail("ctaken");
    const first = await call("POST", "/auth/signup", { json: { email: taken, password: PASSWORD, full_name: "Owner" } });
    assert.equal(first.status, 202, JSON.stringify(first.body));
    assert.deepEqual(first.body, VERIFICATION_SENT);
    const again = await call("POST", "/auth/signup", { json: { email: taken.toUpperCase(), password: "another password 1", full_name: "X" } });
    assert.equal(again.status, 202);
    assert.deepEqual(again.body, first.body);

    // Timing: sign-ups of new addresses and of the registered one, alternated; the medians must
    // be of one order (a registered address used to answer in ~5% of the time).
    const times = await timeAlternately(
      12,
      () => call("POST", "/auth/signup", { json: { email: uniqueEmail("tnew"), password: PASSWORD, full_name: "T" } }),
      () => call("POST", "/auth/signup", { json: { email: taken, password: PASSWORD, full_name: "T" } }),
    );
    const ratio = median(times.b) / median(times.a);
    console.log(`sign-up median: new ${median(times.a).toFixed(1)} ms, registered ${median(times.b).toFixed(1)} ms, ratio ${ratio.toFixed(2)}`);
    assert.ok(ratio > 0.5 && ratio < 2, `registered/new median ratio ${ratio.toFixed(2)}`);
  });
});

describe("change of email", () => {
  test("the new address gets the link; the account keeps its address until it is followed", async () => {
    const email = uniqueEmail("mover");
    await signUp(email);
    const verified = await follow((await inbox.next(email, /Confirm/)).link);
    const session = verified.headers.get("set-auth-token")!;
    const newEmail = uniqueEmail("moved");
    const res = await call("POST", "/api/auth/change-email", { token: session, json: { newEmail } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const mail = await inbox.next(newEmail, /Confirm your new email address/);
    assertWellFormed(mail, APP_URL);
    assert.equal((await call("GET", "/auth/me", { token: session })).body.email, email, "unchanged before the link");
    assert.equal((await signIn(newEmail)).status, 401);
    const followed = await call("GET", `/api/auth/verify-email?token=${encodeURIComponent(fragmentValue(mail.link, "verify-email"))}`);
    assert.equal(followed.status, 200, JSON.stringify(followed.body));
    assert.equal((await call("GET", "/auth/me", { token: session })).body.email, newEmail);
    assert.equal((await signIn(newEmail)).status, 200);
    assert.equal((await signIn(email)).status, 401, "the old address no longer signs in");
  });

  test("asking for an address already in use answers the same and mails nobody", async () => {
    const email = uniqueEmail("mover2");
    await signUp(email);
    const session = (await follow((await inbox.next(email, /Confirm/)).link)).headers.get("set-auth-token")!;
    const other = uniqueEmail("occupied");
    await signUp(other);
    await inbox.next(other, /Confirm/);
    const taken = await call("POST", "/api/auth/change-email", { token: session, json: { newEmail: other } });
    const free = await call("POST", "/api/auth/change-email", { token: session, json: { newEmail: uniqueEmail("free") } });
    assert.equal(taken.status, 200);
    assert.deepEqual(taken.body, free.body);
    await svc.mailer.idle();
    assert.equal(inbox.to(other).length, 1, "only its own sign-up mail");
  });
});

describe("EMAIL_VERIFICATION=optional (the development and test default)", () => {
  let optional: TestService;
  before(async () => {
    optional = await startTestService({ SMTP_URL: inbox.smtpUrl, APP_URL });
  });
  after(async () => {
    await optional?.stop();
  });

  test("sign-up opens a session at once and still mails a verification link; a taken address stays a 409", async () => {
    assert.equal(optional.config.emailVerification, "optional");
    const email = uniqueEmail("optional");
    const res = await request(optional.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Opt" } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const mail = await inbox.next(email, /Confirm your email address/);
    const session = await request(optional.url, "GET", "/api/auth/get-session", { token: res.body.session_token, headers: { origin: BASE_URL } });
    assert.equal(session.body.user.emailVerified, false);
    const verified = await request(optional.url, "GET", `/api/auth/verify-email?token=${encodeURIComponent(fragmentValue(mail.link, "verify-email"))}`);
    assert.equal(verified.status, 200);
    const after = await request(optional.url, "GET", "/api/auth/get-session", { token: res.body.session_token, headers: { origin: BASE_URL } });
    assert.equal(after.body.user.emailVerified, true);
    const dup = await request(optional.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Opt" } });
    assert.equal(dup.status, 409);
  });
});
