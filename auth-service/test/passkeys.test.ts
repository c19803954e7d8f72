// Passkey sign-in against a real service and database, with a software authenticator written
// here from the WebAuthn spec (P-256 keys from node:crypto, CBOR by hand, "none" attestation):
// registration, sign-in, and the signature counter. A key that counts its signatures must show
// a higher count each time, also when several sign-ins with one count race (the clone check,
// src/passkeys.ts); a passkey that does not count (synced passkeys say 0) signs in every time.
import assert from "node:assert/strict";
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

const ORIGIN = "http://localhost:5173";
const RP_ID = "localhost";
let svc: TestService;

before(async () => {
  svc = await startTestService({ TRUSTED_ORIGINS: ORIGIN, TRUSTED_PROXIES: "127.0.0.1" });
});
after(async () => {
  await svc?.stop();
});

let ipCounter = 0;
/** A new client address per call: these tests are not about the per-IP limits. */
const nextIp = () => `198.51.100.${(ipCounter++ % 250) + 1}`;

// --- CBOR, only what a credential needs (RFC 8949: unsigned and negative ints, bytes, text, maps)
function head(major: number, value: number): Buffer {
  if (value < 24) return Buffer.from([(major << 5) | value]);
  if (value < 256) return Buffer.from([(major << 5) | 24, value]);
  return Buffer.from([(major << 5) | 25, value >> 8, value & 0xff]);
}
type Cbor = number | string | Buffer | Map<number | string, Cbor>;
function cbor(value: Cbor): Buffer {
  if (typeof value === "number") return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (typeof value === "string") return Buffer.concat([head(3, Buffer.byteLength(value)), Buffer.from(value)]);
  if (Buffer.isBuffer(value)) return Buffer.concat([head(2, value.length), value]);
  return Buffer.concat([head(5, value.size), ...[...value].flatMap(([k, v]) => [cbor(k), cbor(v)])]);
}

const b64url = (data: Buffer) => data.toString("base64url");
const sha256 = (data: Buffer | string) => createHash("sha256").update(data).digest();
const counterBytes = (count: number) => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(count);
  return out;
};
// Authenticator data flags: user present, user verified, attested credential data included.
const UP = 0x01;
const UV = 0x04;
const AT = 0x40;

/** A security key holding one credential. */
class SoftwareKey {
  readonly credentialId = randomBytes(16);
  private readonly privateKey: KeyObject;
  private readonly publicKey: KeyObject;

  constructor() {
    ({ privateKey: this.privateKey, publicKey: this.publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" }));
  }

  get id(): string {
    return b64url(this.credentialId);
  }

  private coseKey(): Buffer {
    const jwk = this.publicKey.export({ format: "jwk" });
    // kty EC2, alg ES256, crv P-256, x, y
    return cbor(new Map<number, Cbor>([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x!, "base64url")], [-3, Buffer.from(jwk.y!, "base64url")]]));
  }

  /** navigator.credentials.create's answer to `challenge`. */
  register(challenge: string) {
    const credentialIdLength = Buffer.alloc(2);
    credentialIdLength.writeUInt16BE(this.credentialId.length);
    const authData = Buffer.concat([sha256(RP_ID), Buffer.from([UP | UV | AT]), counterBytes(0), Buffer.alloc(16),
      credentialIdLength, this.credentialId, this.coseKey()]);
    const clientData = Buffer.from(JSON.stringify({ type: "webauthn.create", challenge, origin: ORIGIN, crossOrigin: false }));
    const attestation = cbor(new Map<string, Cbor>([["fmt", "none"], ["attStmt", new Map()], ["authData", authData]]));
    return {
      id: this.id, rawId: this.id, type: "public-key", clientExtensionResults: {}, authenticatorAttachment: "cross-platform",
      response: { clientDataJSON: b64url(clientData), attestationObject: b64url(attestation), transports: ["usb"] },
    };
  }

  /** navigator.credentials.get's answer to `challenge`, with the signature counter at `count`. */
  assert(challenge: string, count: number) {
    const authData = Buffer.concat([sha256(RP_ID), Buffer.from([UP | UV]), counterBytes(count)]);
    const clientData = Buffer.from(JSON.stringify({ type: "webauthn.get", challenge, origin: ORIGIN, crossOrigin: false }));
    const signature = sign("sha256", Buffer.concat([authData, sha256(clientData)]), { key: this.privateKey, dsaEncoding: "der" });
    return {
      id: this.id, rawId: this.id, type: "public-key", clientExtensionResults: {}, authenticatorAttachment: "cross-platform",
      response: { clientDataJSON: b64url(clientData), authenticatorData: b64url(authData), signature: b64url(signature) },
    };
  }
}

/** The name=value pairs of a response's Set-Cookie lines, as a Cookie header. */
const cookiesOf = (headers: Headers) => headers.getSetCookie().map((line) => line.split(";")[0]).join("; ");

/** A new account with `key` registered as its passkey. */
async function accountWithKey(key: SoftwareKey): Promise<string> {
  const email = uniqueEmail("passkey");
  const signup = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Passkey User" }, headers: { "x-forwarded-for": nextIp() } });
  assert.equal(signup.status, 201, JSON.stringify(signup.body));
  const session = signup.body.session_token as string;
  const options = await request(svc.url, "GET", "/api/auth/passkey/generate-register-options", { token: session, headers: { origin: ORIGIN, "x-forwarded-for": nextIp() } });
  assert.equal(options.status, 200, JSON.stringify(options.body));
  const registered = await request(svc.url, "POST", "/api/auth/passkey/verify-registration", {
    token: session,
    json: { response: key.register(options.body.challenge), name: "test key" },
    headers: { origin: ORIGIN, cookie: cookiesOf(options.headers), "x-forwarded-for": nextIp() },
  });
  assert.equal(registered.status, 200, JSON.stringify(registered.body));
  return signup.body.user.id as string;
}

/** A challenge to sign in with, and the cookie that carries it. */
async function authenticationChallenge(): Promise<{ challenge: string; cookie: string }> {
  const options = await request(svc.url, "GET", "/api/auth/passkey/generate-authenticate-options", { headers: { origin: ORIGIN, "x-forwarded-for": nextIp() } });
  assert.equal(options.status, 200, JSON.stringify(options.body));
  return { challenge: options.body.challenge as string, cookie: cookiesOf(options.headers) };
}

async function signIn(key: SoftwareKey, count: number, challenge?: { challenge: string; cookie: string }) {
  const { challenge: value, cookie } = challenge ?? (await authenticationChallenge());
  return request(svc.url, "POST", "/api/auth/passkey/verify-authentication", {
    json: { response: key.assert(value, count) },
    headers: { origin: ORIGIN, cookie, "x-forwarded-for": nextIp() },
  });
}

const RACERS = 6;

describe("the signature counter of a passkey", () => {
  test("a key that counts must count up: a count shown again is refused", async () => {
    const key = new SoftwareKey();
    const userId = await accountWithKey(key);
    const first = await signIn(key, 1);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.user.id, userId);
    const again = await signIn(key, 1);
    assert.equal(again.status, 400, JSON.stringify(again.body));
    assert.equal(again.body.code, "AUTHENTICATION_FAILED");
    assert.equal((await signIn(key, 2)).status, 200);
  });

  test("sign-ins raced with one count open exactly one session", async () => {
    const key = new SoftwareKey();
    await accountWithKey(key);
    // Each with its own challenge, all verified before any is answered: only the count is shared.
    const challenges = await Promise.all(Array.from({ length: RACERS }, () => authenticationChallenge()));
    const answers = await Promise.all(challenges.map((challenge) => signIn(key, 5, challenge)));
    const statuses = answers.map((answer) => answer.status).sort();
    assert.deepEqual(statuses, [200, ...Array(RACERS - 1).fill(400)], JSON.stringify(answers.map((a) => a.body)));
    assert.ok(answers.every((answer) => answer.status === 200 || answer.body.code === "AUTHENTICATION_FAILED"));
    // The count the winner claimed is the one stored: 5 again is refused, 6 signs in.
    assert.equal((await signIn(key, 5)).status, 400);
    assert.equal((await signIn(key, 6)).status, 200);
  });

  test("a passkey that does not count (always 0) signs in every time, also raced", async () => {
    const key = new SoftwareKey();
    await accountWithKey(key);
    assert.equal((await signIn(key, 0)).status, 200);
    const challenges = await Promise.all(Array.from({ length: RACERS }, () => authenticationChallenge()));
    const answers = await Promise.all(challenges.map((challenge) => signIn(key, 0, challenge)));
    assert.deepEqual(answers.map((answer) => answer.status), Array(RACERS).fill(200));
  });
});
