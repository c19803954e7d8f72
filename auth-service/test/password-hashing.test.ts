// Password hashing: new passwords are stored as argon2id (OWASP parameters); legacy scrypt
// hashes (Better Auth's former default) still sign in and are replaced on that sign-in.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { hashPassword as scryptHash } from "better-auth/crypto";
import { CURRENT_HASH_PREFIX, hashPassword, needsRehash, verifyPassword } from "../src/password-hashing.js";
import { PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";

let svc: TestService;

before(async () => {
  svc = await startTestService();
});
after(async () => {
  await svc?.stop();
});

async function storedHash(email: string): Promise<string> {
  const row = await svc.database.db
    .selectFrom("account")
    .innerJoin("user", "user.id", "account.userId")
    .select("account.password")
    .where("user.email", "=", email)
    .where("account.providerId", "=", "credential")
    .executeTakeFirstOrThrow();
  return row.password as string;
}

async function setStoredHash(email: string, hash: string): Promise<void> {
  const user = await svc.database.db.selectFrom("user").select("id").where("email", "=", email).executeTakeFirstOrThrow();
  await svc.database.db.updateTable("account").set({ password: hash }).where("userId", "=", user.id).where("providerId", "=", "credential").execute();
}

async function signUp(tag: string): Promise<string> {
  const email = uniqueEmail(tag);
  const res = await request(svc.url, "POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: "Hash User" } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return email;
}

const login = (email: string, password = PASSWORD) => request(svc.url, "POST", "/auth/login", { json: { email, password } });

describe("password hashing", () => {
  test("a new password is stored as argon2id with m=19456 KiB, t=2, p=1", async () => {
    const email = await signUp("argon");
    const hash = await storedHash(email);
    assert.ok(hash.startsWith("$argon2id$v=19$m=19456,t=2,p=1$"), hash.slice(0, 30));
    assert.equal((await login(email)).status, 200);
    assert.equal((await login(email, `${PASSWORD}!`)).status, 401);
    assert.equal(await storedHash(email), hash, "a current hash is not rewritten on sign-in");
  });

  test("a legacy scrypt hash still signs in and is re-hashed with argon2id on that sign-in", async () => {
    const email = await signUp("legacy");
    const legacy = await scryptHash(PASSWORD);
    assert.match(legacy, /^[0-9a-f]+:[0-9a-f]+$/);
    await setStoredHash(email, legacy);

    assert.equal((await login(email, `${PASSWORD}!`)).status, 401);
    assert.equal(await storedHash(email), legacy, "a failed sign-in changes nothing");

    assert.equal((await login(email)).status, 200);
    const upgraded = await storedHash(email);
    assert.ok(upgraded.startsWith(CURRENT_HASH_PREFIX), upgraded.slice(0, 30));
    assert.equal((await login(email)).status, 200);
    assert.equal((await login(email, `${PASSWORD}!`)).status, 401);
  });

  test("an argon2 hash with weaker parameters is upgraded too", async () => {
    const email = await signUp("weak-params");
    const { hash } = await import("@node-rs/argon2");
    const weak = await hash(PASSWORD, { memoryCost: 4096, timeCost: 1, parallelism: 1 });
    await setStoredHash(email, weak);
    assert.equal((await login(email)).status, 200);
    assert.ok((await storedHash(email)).startsWith(CURRENT_HASH_PREFIX));
  });

  test("verifyPassword tells both formats apart", async () => {
    const argon = await hashPassword("s3cret passphrase");
    const scrypt = await scryptHash("s3cret passphrase");
    assert.equal(await verifyPassword({ hash: argon, password: "s3cret passphrase" }), true);
    assert.equal(await verifyPassword({ hash: argon, password: "s3cret passphrasE" }), false);
    assert.equal(await verifyPassword({ hash: scrypt, password: "s3cret passphrase" }), true);
    assert.equal(await verifyPassword({ hash: scrypt, password: "other" }), false);
    assert.equal(needsRehash(argon), false);
    assert.equal(needsRehash(scrypt), true);
  });
});
