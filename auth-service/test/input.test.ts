// Bounded input on every route (body limit, email/name bounds, control characters), the error
// mapping of the contract routes, security headers on every response and logs without user data.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

let svc: TestService;
const ORIGIN = { origin: BASE_URL };

before(async () => {
  svc = await startTestService();
});
after(async () => {
  await svc?.stop();
});

async function userCount(email: string): Promise<number> {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from "user" where email = ${email.toLowerCase()}`.execute(svc.database.db);
  return rows[0]!.n;
}

async function cookieSession(): Promise<{ cookie: string; email: string }> {
  const email = uniqueEmail("input");
  const res = await fetch(`${svc.url}/api/auth/sign-up/email`, {
    method: "POST",
    headers: { "content-type": "application/json", ...ORIGIN },
    body: JSON.stringify({ email, password: PASSWORD, name: "Input User" }),
  });
  assert.equal(res.status, 200);
  return { cookie: res.headers.getSetCookie().map((c) => c.split(";")[0]).join("; "), email };
}

describe("body limit (64 KiB)", () => {
  const big = JSON.stringify({ email: "a@example.com", password: "p".repeat(70 * 1024) });
  for (const path of ["/api/auth/sign-in/email", "/auth/login", "/auth/signup", "/nope"]) {
    test(`${path}: a 70 KiB body is refused with 413 in the service's error shape`, async () => {
      const res = await request(svc.url, "POST", path, { body: big, headers: ORIGIN });
      assert.equal(res.status, 413, JSON.stringify(res.body));
      assert.equal(res.body.error.code, "payload_too_large");
    });
  }

  test("a chunked body without Content-Length is cut off at the limit as well", async () => {
    const chunk = new TextEncoder().encode("x".repeat(16 * 1024));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 64) controller.enqueue(chunk); // up to 1 MiB
        else controller.close();
      },
    });
    const res = await fetch(`${svc.url}/api/auth/sign-in/email`, {
      method: "POST",
      headers: { "content-type": "application/json", ...ORIGIN },
      body,
      duplex: "half",
    } as RequestInit);
    assert.equal(res.status, 413);
    assert.equal((await res.json()).error.code, "payload_too_large");
  });
});

describe("email, name and control characters on Better Auth's own routes", () => {
  test("sign-up/email refuses a 255-character email and stores nothing", async () => {
    const email = `${"e".repeat(243)}@example.com`;
    assert.equal(email.length, 255);
    const res = await request(svc.url, "POST", "/api/auth/sign-up/email", { json: { email, password: PASSWORD, name: "Long" }, headers: ORIGIN });
    assert.equal(res.status, 400, JSON.stringify(res.body));
    assert.equal(await userCount(email), 0);
  });

  test("a NUL or other control character in name is a 422 and stores nothing", async () => {
    for (const name of ["Bad\u0000Name", "Bad\u001bName", "Bad\u007fName"]) {
      const email = uniqueEmail("nul");
      const res = await request(svc.url, "POST", "/api/auth/sign-up/email", { json: { email, password: PASSWORD, name }, headers: ORIGIN });
      assert.equal(res.status, 422, JSON.stringify(res.body));
      assert.equal(await userCount(email), 0);
    }
  });

  test("update-user: a NUL in name is a 422 (not a 500), the name is unchanged", async () => {
    const { cookie } = await cookieSession();
    const res = await request(svc.url, "POST", "/api/auth/update-user", { json: { name: "x\u0000y" }, headers: { cookie, ...ORIGIN } });
    assert.equal(res.status, 422, JSON.stringify(res.body));
    assert.equal((await request(svc.url, "GET", "/api/auth/get-session", { headers: { cookie } })).body.user.name, "Input User");
  });

  test("update-user with only image works; a too-long name does not", async () => {
    const { cookie } = await cookieSession();
    const ok = await request(svc.url, "POST", "/api/auth/update-user", { json: { image: "https://img.example/a.png" }, headers: { cookie, ...ORIGIN } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const session = (await request(svc.url, "GET", "/api/auth/get-session", { headers: { cookie } })).body;
    assert.equal(session.user.image, "https://img.example/a.png");
    const long = await request(svc.url, "POST", "/api/auth/update-user", { json: { name: "n".repeat(201) }, headers: { cookie, ...ORIGIN } });
    assert.equal(long.status, 400);
  });
});

describe("contract routes: error mapping", () => {
  test("a NUL in full_name or email is a 422 validation_error, never 409 email_taken", async () => {
    for (const json of [
      { email: uniqueEmail("nul"), password: PASSWORD, full_name: "A\u0000B" },
      { email: `nul\u0000${uniqueEmail()}`, password: PASSWORD, full_name: "AB" },
    ]) {
      const res = await request(svc.url, "POST", "/auth/signup", { json });
      assert.equal(res.status, 422, JSON.stringify(res.body));
      assert.equal(res.body.error.code, "validation_error");
    }
  });

  test("only an existing account is a 409", async () => {
    const email = uniqueEmail("dup");
    assert.equal((await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "D" } })).status, 201);
    const dup = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "D" } });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.error.code, "email_taken");
  });
});

describe("security headers", () => {
  test("every response carries no-store, nosniff and no-referrer", async () => {
    const session = (await request(svc.url, "POST", "/auth/signup", { json: { email: uniqueEmail("hdr"), password: PASSWORD, full_name: "H" } })).body.session_token;
    const responses = [
      await request(svc.url, "GET", "/health"),
      await request(svc.url, "GET", "/api/auth/jwks"),
      await request(svc.url, "POST", "/auth/login", { json: { email: uniqueEmail(), password: PASSWORD } }),
      await request(svc.url, "POST", "/auth/token", { token: session }),
      await request(svc.url, "GET", "/auth/me", { token: session }),
      await request(svc.url, "GET", "/nope"),
    ];
    for (const res of responses) {
      assert.equal(res.headers.get("cache-control"), "no-store");
      assert.equal(res.headers.get("x-content-type-options"), "nosniff");
      assert.equal(res.headers.get("referrer-policy"), "no-referrer");
    }
  });
});

describe("logs", () => {
  test("a database error goes to the log without its query parameters (no email or name)", async () => {
    const email = uniqueEmail("secret-log");
    const name = "Secret Person Name";
    assert.equal((await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: name } })).status, 201);
    // A real failing INSERT carrying the name and email (the email is taken: pg names it in `detail`).
    const err = await sql`insert into "user" (id, name, email, "emailVerified", "createdAt", "updatedAt")
      values (${`dup-${Date.now()}`}, ${name}, ${email}, false, now(), now())`.execute(svc.database.db).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof Error);
    const lines: string[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => void lines.push(args.map((a) => (a instanceof Error ? `${a.stack} ${JSON.stringify({ ...a })}` : String(a))).join(" "));
    try {
      (await svc.auth.$context).logger.error("Failed to create user", err);
    } finally {
      console.error = original;
    }
    const logged = lines.join("\n");
    assert.match(logged, /Failed to create user/);
    assert.ok(!logged.includes(email), logged);
    assert.ok(!logged.includes(name), logged);
    assert.ok(!/insert into/i.test(logged), logged);
  });
});
