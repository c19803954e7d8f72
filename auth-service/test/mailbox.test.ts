// Mail settings and the development outbox: production needs SMTP_URL and MAIL_FROM and makes
// verification required; without SMTP_URL (outside production) every mail is an .eml file under
// MAIL_DIR, listed by /dev/mailbox, which is a 404 in production and with SMTP_URL; a delivery
// that keeps failing is retried, then logged without the address or the body.
import assert from "node:assert/strict";
import { existsSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ConfigError, loadConfig } from "../src/config.js";
import { databaseThrottleStore } from "../src/account-throttle.js";
import { createMailer } from "../src/mailer.js";
import { safeLog } from "../src/safe-log.js";
import { verifyEmailMail } from "../src/mail-messages.js";
import { BASE_URL, PASSWORD, request, startTestService, tempDir, uniqueEmail, type TestService } from "./helpers.js";
import { startInbox } from "./mail-support.js";

const SECRET = "s".repeat(40);

describe("configuration", () => {
  test("production requires SMTP_URL and MAIL_FROM, and defaults to required verification", () => {
    const dir = tempDir();
    const base = { AUTH_ENV: "production", AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: SECRET, ACCOUNT_EVENTS_TOKEN: "e".repeat(32) };
    assert.throws(() => loadConfig(base), (e: Error) => e instanceof ConfigError && /SMTP_URL is not set/.test(e.message));
    assert.throws(() => loadConfig({ ...base, SMTP_URL: "smtp://mail.example:587" }), (e: Error) => e instanceof ConfigError && /MAIL_FROM is not set/.test(e.message));
    assert.throws(() => loadConfig({ ...base, SMTP_URL: "http://mail.example", MAIL_FROM: "a@b.example" }), ConfigError);
    const prod = loadConfig({ ...base, SMTP_URL: "smtps://u:p@mail.example:465", MAIL_FROM: "Acme <no-reply@acme.example>" });
    assert.equal(prod.emailVerification, "required");
    assert.equal(loadConfig({ ...base, SMTP_URL: "smtp://m.example", MAIL_FROM: "a@b.example", EMAIL_VERIFICATION: "optional" }).emailVerification, "optional");
  });

  test("development and test: optional verification, the outbox under the data folder, APP_URL checked", () => {
    const dir = tempDir();
    const dev = loadConfig({ AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: SECRET });
    assert.equal(dev.emailVerification, "optional");
    assert.equal(dev.mail.smtpUrl, undefined);
    assert.equal(dev.mail.dir, path.join(dir, "mail"));
    assert.equal(dev.appUrl, "http://localhost:5173");
    assert.equal(dev.passwordResetExpiresIn, 3600);
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: SECRET, EMAIL_VERIFICATION: "sometimes" }), ConfigError);
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: SECRET, APP_URL: "javascript:alert(1)" }), ConfigError);
  });
});

describe("the development outbox and mailbox", () => {
  let svc: TestService;
  before(async () => {
    svc = await startTestService({ AUTH_ENV: "development", APP_URL: "http://localhost:5173" });
  });
  after(async () => {
    await svc?.stop();
  });

  test("a sign-up's mail is an .eml file (private) and the mailbox lists and shows it", async () => {
    const email = uniqueEmail("outbox");
    const res = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Outbox" } });
    assert.equal(res.status, 201);
    await svc.mailer.idle();
    const dir = svc.mailer.outboxDir!;
    assert.equal(dir, path.join(svc.dataDir, "mail"));
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    const files = readdirSync(dir);
    assert.equal(files.filter((f) => f.endsWith(".eml")).length, 1, files.join(", "));

    const listed = await request(svc.url, "GET", "/dev/mailbox", { headers: { accept: "application/json" } });
    assert.equal(listed.status, 200);
    assert.equal(listed.body.mails.length, 1);
    const [entry] = listed.body.mails;
    assert.equal(entry.to, email);
    assert.equal(entry.subject, "Confirm your email address");

    const html = await fetch(`${svc.url}/dev/mailbox`);
    assert.match(html.headers.get("content-security-policy") ?? "", /default-src 'none'/);
    assert.ok((await html.text()).includes(`href="mailbox/${entry.id}"`));
    const shown = await fetch(`${svc.url}/dev/mailbox/${entry.id}`);
    const page = await shown.text();
    assert.match(page, /<a href="http:\/\/localhost:5173\/#verify-email=[^"]+">/, "the link is clickable");
    const eml = await fetch(`${svc.url}/dev/mailbox/${entry.id}.eml`);
    assert.equal(eml.headers.get("content-type"), "message/rfc822");
    const raw = await eml.text();
    assert.match(raw, /^Subject: Confirm your email address$/m);
    assert.match(raw, /Content-Type: multipart\/alternative/);

    // The link in the outbox works like one from an SMTP server.
    const token = decodeURIComponent(page.match(/#verify-email=([^"]+)"/)![1]!);
    const verified = await request(svc.url, "GET", `/api/auth/verify-email?token=${encodeURIComponent(token)}`, { headers: { origin: BASE_URL } });
    assert.equal(verified.status, 200);
  });

  test("in the database store, the mail cap and the sign-in throttle expire on their own terms", async () => {
    const store = databaseThrottleStore(svc.database.db);
    const t0 = Date.now();
    const hour = 3_600_000;
    await store.recordFailure("mail:reset-password:cap-test", t0, hour, hour);
    // A sign-in failure 40 minutes later prunes sign-in rows older than its 30-minute ttl only.
    await store.recordFailure("acct:throttle-test", t0 + 40 * 60_000, 900_000, 1_800_000);
    assert.equal((await store.get("mail:reset-password:cap-test"))?.failures, 1);
    // And a mail an hour and a half later prunes the stale mail row.
    await store.recordFailure("mail:verify-email:other", t0 + 90 * 60_000, hour, hour);
    assert.equal(await store.get("mail:reset-password:cap-test"), null);
    assert.equal((await store.get("acct:throttle-test"))?.failures, 1);
  });

  test("ids that are not outbox entries are a 404, never a path", async () => {
    for (const id of ["..%2F..%2Fauth-secret", "nope", "0000000000000-000000000000", "..%2Fauth-secret.eml"]) {
      assert.equal((await fetch(`${svc.url}/dev/mailbox/${id}`)).status, 404, id);
    }
  });
});

describe("where the mailbox does not exist", () => {
  test("production (with SMTP) and development with SMTP_URL answer 404 at /dev/mailbox", async () => {
    const inbox = await startInbox();
    const prod = await startTestService({ AUTH_ENV: "production", SMTP_URL: inbox.smtpUrl, MAIL_FROM: "Prod <p@example.com>" });
    const devSmtp = await startTestService({ AUTH_ENV: "development", SMTP_URL: inbox.smtpUrl });
    try {
      for (const svc of [prod, devSmtp]) {
        const res = await request(svc.url, "GET", "/dev/mailbox");
        assert.equal(res.status, 404);
        assert.equal(res.body.error.code, "not_found");
        assert.equal(svc.mailer.outboxDir, undefined);
      }
      const email = uniqueEmail("prodmail");
      const res = await request(prod.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Prod" } });
      assert.equal(res.status, 202, "production: verification required, no session");
      const mail = await inbox.next(email, /Confirm/);
      assert.match(mail.from, /p@example\.com/);
      assert.equal(existsSync(path.join(prod.dataDir, "mail")), false, "nothing written to disk");
    } finally {
      await prod.stop();
      await devSmtp.stop();
      await inbox.close();
    }
  });
});

describe("delivery failures", () => {
  test("an unreachable SMTP server: retried, then one error line without address, subject or link", async () => {
    const mailer = createMailer(
      { devMode: false, mail: { smtpUrl: "smtp://127.0.0.1:9", from: "x@example.com", dir: "/unused", perAddressMax: 5, perAddressWindowSeconds: 60 } },
      { retryDelayMs: 1 },
    );
    const lines: string[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      const mail = verifyEmailMail("http://localhost:5173", "secret-person@example.com", "tok3n-value", 3600);
      const started = Date.now();
      mailer.send(mail);
      assert.ok(Date.now() - started < 50, "send() does not wait for the SMTP server");
      await mailer.idle();
    } finally {
      console.error = original;
      await mailer.close();
    }
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0]!, /a verify-email mail was not delivered after 4 attempts/);
    assert.ok(!/secret-person|tok3n|Confirm your/.test(lines[0]!), lines[0]);
  });
});

describe("log lines", () => {
  test("addresses and tokens in Better Auth's messages are masked", () => {
    const lines: string[] = [];
    const original = console.log;
    console.log = (...args: unknown[]) => void lines.push(args.map(String).join(" "));
    try {
      safeLog("info", "Sign-up attempt for existing email: Someone.Else+tag@example.co.uk", "http://localhost:3001/api/auth/verify-email?token=eyJhbGc.secret&callbackURL=/");
      safeLog("info", "link http://localhost:5173/#reset-password=abcdef123456 sent");
      safeLog("info", "callback http://localhost:3001/api/auth/reset-password/rst0ken987?callbackURL=/ reached");
    } finally {
      console.log = original;
    }
    const logged = lines.join("\n");
    assert.match(logged, /existing email: \[email\]/);
    assert.match(logged, /token=\[redacted\]&callbackURL/);
    assert.match(logged, /#reset-password=\[redacted\]/);
    assert.match(logged, /\/reset-password\/\[redacted\]\?callbackURL/);
    assert.ok(!/Someone|example\.co\.uk|eyJhbGc|abcdef123456|rst0ken987/.test(logged), logged);
  });
});
