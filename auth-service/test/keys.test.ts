// Signing-key rotation: stage (published, not signing) -> activate (new kid signs, old kid still
// published so its tokens verify until they expire) -> prune after the grace period.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { activateKey, listKeys, pruneKeys, stageKey } from "../src/keys.js";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

let svc: TestService;
let session: string;
const GRACE = 3600;

before(async () => {
  svc = await startTestService({ JWT_KEY_GRACE_PERIOD: String(GRACE) });
  const res = await request(svc.url, "POST", "/auth/signup", { json: { email: uniqueEmail("keys"), password: PASSWORD, full_name: "Key Holder" } });
  session = res.body.session_token;
});
after(async () => {
  await svc?.stop();
});

async function mint(): Promise<string> {
  const res = await request(svc.url, "POST", "/auth/token", { token: session });
  assert.equal(res.status, 200);
  return res.body.access_token;
}
async function jwks(): Promise<{ keys: Array<{ kid: string }> }> {
  return (await request(svc.url, "GET", "/api/auth/jwks")).body;
}
async function verifiesAgainstJwks(token: string) {
  return jwtVerify(token, createLocalJWKSet(await jwks()), { audience: "rag-service", issuer: BASE_URL, algorithms: ["EdDSA"] });
}

test("staged rotation keeps old tokens valid and moves new tokens to a new kid", async () => {
  const oldToken = await mint();
  const oldKid = decodeProtectedHeader(oldToken).kid!;
  assert.deepEqual((await jwks()).keys.map((k) => k.kid), [oldKid]);

  // 1. stage: the new key is published before it signs anything.
  const newKid = await stageKey(svc.auth);
  assert.notEqual(newKid, oldKid);
  assert.deepEqual((await jwks()).keys.map((k) => k.kid).sort(), [oldKid, newKid].sort());
  assert.equal(decodeProtectedHeader(await mint()).kid, oldKid, "still signing with the old key while staged");
  assert.deepEqual(
    (await listKeys(svc.auth)).map((k) => [k.kid, k.state]).sort(),
    [[oldKid, "signing"], [newKid, "staged"]].sort(),
  );

  // 2. activate: new tokens carry the new kid; the old key stays published (retired).
  const { activated, retired } = await activateKey(svc.auth);
  assert.equal(activated, newKid);
  assert.deepEqual(retired, [oldKid]);
  const newToken = await mint();
  assert.equal(decodeProtectedHeader(newToken).kid, newKid);
  const published = (await jwks()).keys.map((k) => k.kid);
  assert.ok(published.includes(newKid) && published.includes(oldKid), "both keys published during the overlap");
  assert.equal((await verifiesAgainstJwks(oldToken)).payload.sub, (await verifiesAgainstJwks(newToken)).payload.sub);
  const me = await request(svc.url, "GET", "/auth/me", { token: oldToken });
  assert.equal(me.status, 200, "the service itself still accepts the old-key token");

  // 3. nothing to prune yet; after the grace period the old key leaves the JWKS and is pruned.
  assert.deepEqual(await pruneKeys(svc.auth), []);
  const later = new Date(Date.now() + (GRACE + 60) * 1000);
  assert.equal((await listKeys(svc.auth, later)).find((k) => k.kid === oldKid)?.state, "expired");
  assert.deepEqual(await pruneKeys(svc.auth, later), [oldKid]);
  assert.deepEqual((await jwks()).keys.map((k) => k.kid), [newKid]);
  await assert.rejects(verifiesAgainstJwks(oldToken), "an old-key token no longer verifies once its key is gone");
  assert.equal(decodeProtectedHeader(await mint()).kid, newKid);
});

test("activate without a staged key is refused", async () => {
  await assert.rejects(activateKey(svc.auth), /exactly one staged key/);
});

test("automatic rotation (JWT_KEY_ROTATION_INTERVAL): a new kid after the interval, the old one still published", async (t) => {
  const auto = await startTestService({ JWT_KEY_ROTATION_INTERVAL: "2", JWT_KEY_GRACE_PERIOD: String(GRACE) });
  try {
    // The service runs in this process: its clock (Date) is moved past the interval, not waited for.
    t.mock.timers.enable({ apis: ["Date"], now: Date.now() });
    const signup = await request(auto.url, "POST", "/auth/signup", { json: { email: uniqueEmail("auto"), password: PASSWORD, full_name: "Auto" } });
    const first = signup.body.access_token as string;
    t.mock.timers.tick(2_001);
    const second = (await request(auto.url, "POST", "/auth/token", { token: signup.body.session_token })).body.access_token as string;
    const [kidA, kidB] = [decodeProtectedHeader(first).kid, decodeProtectedHeader(second).kid];
    assert.notEqual(kidA, kidB);
    const set = (await request(auto.url, "GET", "/api/auth/jwks")).body;
    assert.deepEqual(set.keys.map((k: { kid: string }) => k.kid).sort(), [kidA, kidB].sort());
    const local = createLocalJWKSet(set);
    await jwtVerify(first, local, { audience: "rag-service", issuer: BASE_URL });
    await jwtVerify(second, local, { audience: "rag-service", issuer: BASE_URL });
  } finally {
    await auto.stop();
  }
});
