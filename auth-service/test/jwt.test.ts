// Better Auth's own routes (/api/auth/*) for browser apps, and the access JWT as rag-service sees it:
// verified against /api/auth/jwks with jose (alg, aud, iss, exp) and checked against the shared schema.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from "jose";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const schema = JSON.parse(readFileSync(new URL("../../shared-schemas/jwt-claims.schema.json", import.meta.url), "utf8"));
const ajv = new Ajv2020({ allErrors: true, strict: true });
addFormats(ajv);
const validateClaims = ajv.compile(schema);

let svc: TestService;
const ORIGIN = { origin: BASE_URL };

before(async () => {
  svc = await startTestService();
});
after(async () => {
  await svc?.stop();
});

async function verify(token: string, opts: { audience?: string; issuer?: string } = {}) {
  const jwks = createRemoteJWKSet(new URL(`${svc.url}/api/auth/jwks`));
  return jwtVerify(token, jwks, {
    algorithms: ["EdDSA"],
    audience: opts.audience ?? "rag-service",
    issuer: opts.issuer ?? BASE_URL,
    requiredClaims: ["sub", "exp", "iat", "iss", "aud"],
  });
}

describe("Better Auth routes with cookies (browser app)", () => {
  const email = uniqueEmail("browser");
  let cookie = "";

  test("sign-up/email creates the user and sets a session cookie", async () => {
    const res = await fetch(`${svc.url}/api/auth/sign-up/email`, {
      method: "POST",
      headers: { "content-type": "application/json", ...ORIGIN },
      body: JSON.stringify({ email, password: PASSWORD, name: "Browser User" }),
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.user.email, email);
    cookie = res.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
    assert.match(cookie, /better-auth\.session_token=/);
    assert.ok(res.headers.get("set-auth-token"), "bearer plugin exposes the session token");
  });

  test("get-session returns the session and a set-auth-jwt header", async () => {
    const res = await fetch(`${svc.url}/api/auth/get-session`, { headers: { cookie } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.user.email, email);
    const jwt = res.headers.get("set-auth-jwt");
    assert.ok(jwt);
    const { payload } = await verify(jwt);
    assert.equal(payload.sub, body.user.id);
  });

  test("token returns an access JWT for the cookie session", async () => {
    const res = await fetch(`${svc.url}/api/auth/token`, { headers: { cookie } });
    assert.equal(res.status, 200);
    const { token } = await res.json();
    const { payload } = await verify(token);
    assert.equal(typeof payload.sub, "string");
    assert.equal(typeof payload.sid, "string");
    assert.equal(payload.email, undefined, "no email in the access token");
  });

  test("sign-in/email with the wrong password is a 401, then the right one works", async () => {
    const bad = await request(svc.url, "POST", "/api/auth/sign-in/email", { json: { email, password: "wrong password" }, headers: ORIGIN });
    assert.equal(bad.status, 401);
    const ok = await request(svc.url, "POST", "/api/auth/sign-in/email", { json: { email, password: PASSWORD }, headers: ORIGIN });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.user.email, email);
  });

  test("sign-up/email enforces the name bounds and password length as well", async () => {
    const longName = await request(svc.url, "POST", "/api/auth/sign-up/email", {
      json: { email: uniqueEmail(), password: PASSWORD, name: "n".repeat(201) },
      headers: ORIGIN,
    });
    assert.equal(longName.status, 400, JSON.stringify(longName.body));
    const shortPw = await request(svc.url, "POST", "/api/auth/sign-up/email", {
      json: { email: uniqueEmail(), password: "short", name: "N" },
      headers: ORIGIN,
    });
    assert.equal(shortPw.status, 400);
  });

  test("sign-out ends the cookie session", async () => {
    const res = await fetch(`${svc.url}/api/auth/sign-out`, {
      method: "POST",
      headers: { cookie, "content-type": "application/json", ...ORIGIN },
      body: "{}",
    });
    assert.equal(res.status, 200);
    const after = await fetch(`${svc.url}/api/auth/token`, { headers: { cookie } });
    assert.equal(after.status, 401);
  });

  test("a cookie request from an untrusted origin is refused by Better Auth's CSRF check", async () => {
    const res = await request(svc.url, "POST", "/api/auth/sign-in/email", {
      json: { email, password: PASSWORD },
      headers: { origin: "http://evil.example", cookie: "x=y" },
    });
    assert.equal(res.status, 403);
  });
});

describe("access JWT", () => {
  let token: string;
  let userId: string;
  const email = uniqueEmail("jwt");
  before(async () => {
    const res = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Jay Doubleyou" } });
    token = res.body.access_token;
    userId = res.body.user.id;
  });

  test("JWKS publishes Ed25519 public keys only", async () => {
    const res = await request(svc.url, "GET", "/api/auth/jwks");
    assert.equal(res.status, 200);
    assert.ok(res.body.keys.length >= 1);
    for (const key of res.body.keys) {
      assert.equal(key.kty, "OKP");
      assert.equal(key.crv, "Ed25519");
      assert.equal(key.alg, "EdDSA");
      assert.equal(typeof key.kid, "string");
      assert.equal(key.d, undefined, "no private material");
    }
    assert.equal(decodeProtectedHeader(token).kid, res.body.keys[0].kid);
  });

  test("verifies against the JWKS with alg, aud, iss and exp checks", async () => {
    const { payload, protectedHeader } = await verify(token);
    assert.equal(protectedHeader.alg, "EdDSA");
    assert.equal(payload.sub, userId);
    assert.equal(payload.aud, "rag-service");
    assert.equal(payload.iss, BASE_URL);
    assert.equal((payload.exp as number) - (payload.iat as number), 15 * 60);
    assert.ok(Math.abs((payload.iat as number) - Date.now() / 1000) < 60);
  });

  test("claims validate against shared-schemas/jwt-claims.schema.json", async () => {
    const { payload } = await verify(token);
    assert.ok(validateClaims(payload), JSON.stringify(validateClaims.errors));
    const fresh = await request(svc.url, "POST", "/auth/token", { token: (await request(svc.url, "POST", "/auth/login", { json: { email, password: PASSWORD } })).body.session_token });
    assert.ok(validateClaims((await verify(fresh.body.access_token)).payload), JSON.stringify(validateClaims.errors));
  });

  test("the token carries sub and sid and nothing that identifies the user", async () => {
    const { payload } = await verify(token);
    assert.deepEqual(Object.keys(payload).sort(), ["aud", "exp", "iat", "iss", "sid", "sub"]);
    assert.equal(payload.sub, userId);
    assert.match(String(payload.sid), /\S/);
    for (const claim of ["email", "name", "image", "emailVerified", "createdAt"]) {
      assert.ok(!validateClaims({ ...payload, [claim]: claim === "emailVerified" ? true : "x" }), `the schema forbids ${claim}`);
    }
  });

  test("the schema rejects claims that miss sub/exp or have the wrong types", () => {
    const { payload } = JSON.parse(JSON.stringify({ payload: { sub: "u", iss: "i", aud: "a", exp: 1, iat: 1 } })) as { payload: JWTPayload };
    assert.ok(validateClaims(payload));
    assert.ok(!validateClaims({ ...payload, sub: undefined }));
    assert.ok(!validateClaims({ ...payload, exp: "soon" }));
    assert.ok(!validateClaims({ ...payload, sub: 42 }));
    assert.ok(!validateClaims({ iss: "i", aud: "a", exp: 1, iat: 1 }));
  });

  test("a wrong audience, a wrong issuer, an expired token or a tampered signature fail", async () => {
    await assert.rejects(verify(token, { audience: "other-service" }), errors.JWTClaimValidationFailed);
    await assert.rejects(verify(token, { issuer: "http://evil.example" }), errors.JWTClaimValidationFailed);
    const keys = (await request(svc.url, "GET", "/api/auth/jwks")).body;
    const local = createLocalJWKSet(keys);
    const { payload } = await jwtVerify(token, local);
    await assert.rejects(
      jwtVerify(token, local, { currentDate: new Date(((payload.exp as number) + 1) * 1000) }),
      errors.JWTExpired,
    );
    const [h, p, s] = token.split(".");
    const flipped = s!.slice(0, -2) + (s!.endsWith("AA") ? "BA" : "AA");
    await assert.rejects(jwtVerify([h, p, flipped].join("."), local), errors.JWSSignatureVerificationFailed);
  });

  test("JWT_AUDIENCE, JWT_ISSUER and JWT_EXPIRES_IN are honoured", async () => {
    const other = await startTestService({ JWT_AUDIENCE: "another-api", JWT_ISSUER: "https://auth.example.com", JWT_EXPIRES_IN: "5m" }, undefined, svc);
    try {
      const res = await request(other.url, "POST", "/auth/signup", { json: { email: uniqueEmail(), password: PASSWORD, full_name: "Cfg" } });
      assert.equal(res.body.expires_in, 300);
      const jwks = createRemoteJWKSet(new URL(`${other.url}/api/auth/jwks`));
      const { payload } = await jwtVerify(res.body.access_token, jwks, { audience: "another-api", issuer: "https://auth.example.com" });
      assert.equal((payload.exp as number) - (payload.iat as number), 300);
    } finally {
      await other.stop();
    }
  });
});
