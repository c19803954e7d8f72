// Membership changes (src/membership-changes.ts): which organization actions are recorded, the
// public GET /auth/membership-changes answer (hashed subjects, since, cache header, rate limit),
// its size cap and pruning, and the `iat` of tokens minted around a change.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import { sql } from "kysely";
import { MAX_CHANGES_PER_ANSWER, MEMBERSHIP_CHANGES_TABLE, membershipChangeLog, RETENTION_MARGIN_SECONDS } from "../src/membership-changes.js";
import { request, startTestService, type TestService } from "./helpers.js";
import { orgApi, type Account } from "./org-support.js";

let svc: TestService;
let api: ReturnType<typeof orgApi>;

before(async () => {
  svc = await startTestService();
  api = orgApi(svc.url);
});
after(async () => {
  await svc?.stop();
});

const hashOf = (who: Account) => createHash("sha256").update(who.userId).digest("hex");

async function changes(url: string, since?: number) {
  const res = await request(url, "GET", `/auth/membership-changes${since === undefined ? "" : `?since=${since}`}`);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res;
}

/** The `changed_at` listed for `who`, or undefined. */
async function changedAt(who: Account): Promise<number | undefined> {
  const { body } = await changes(svc.url);
  return body.changes.find((c: { subject: string }) => c.subject === hashOf(who))?.changed_at;
}

async function accessToken(who: Account): Promise<string> {
  const res = await api.call("POST", "/auth/token", { token: who.session });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.access_token;
}

describe("what is recorded", () => {
  test("a removal: the member's hashed id, once, at or after the removal; tokens minted after it are not older", async () => {
    const owner = await api.signUp("rc-owner");
    const member = await api.signUp("rc-member");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    assert.equal(await changedAt(member), undefined, "joining reduces nothing: not recorded");
    assert.equal(await changedAt(owner), undefined, "creating an organization is not recorded");
    const before = decodeJwt(await accessToken(member)).iat!;

    const removedAt = Date.now();
    assert.equal((await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: member.email })).status, 200);
    const res = await changes(svc.url);
    assert.deepEqual(Object.keys(res.body).sort(), ["changes", "now", "retention_seconds", "truncated"]);
    assert.equal(res.body.truncated, false);
    assert.equal(res.body.retention_seconds, 900 + RETENTION_MARGIN_SECONDS);
    const listed = res.body.changes.filter((c: { subject: string }) => c.subject === hashOf(member));
    assert.equal(listed.length, 1);
    assert.deepEqual(Object.keys(listed[0]).sort(), ["changed_at", "subject"]);
    assert.ok(listed[0].changed_at >= removedAt / 1000 && listed[0].changed_at <= Math.ceil(Date.now() / 1000), JSON.stringify(listed));
    assert.ok(!JSON.stringify(res.body).includes(member.userId), "the list names nobody");
    assert.equal(await changedAt(owner), undefined, "only the removed member");
    assert.ok(before < listed[0].changed_at, "a token minted before the removal is older than the change");
    // The same session mints on: its next token is never older than the change; nor is a token
    // exchanged for an API key.
    assert.ok(decodeJwt(await accessToken(member)).iat! >= listed[0].changed_at);
    const key = await api.call("POST", "/auth/api-keys", { token: member.session, json: { name: "k", scope: "read" } });
    assert.equal(key.status, 201, JSON.stringify(key.body));
    const exchanged = await api.call("POST", "/auth/token", { headers: { "x-api-key": key.body.key } });
    assert.equal(exchanged.status, 200, JSON.stringify(exchanged.body));
    assert.ok(decodeJwt(exchanged.body.access_token).iat! >= listed[0].changed_at);
  });

  test("leaving, a role change and a deleted organization (every member) are recorded", async () => {
    const owner = await api.signUp("rc-owner2");
    const leaver = await api.signUp("rc-leaver");
    const demoted = await api.signUp("rc-demoted");
    const org = await api.createOrg(owner);
    await api.join(owner, leaver, org);
    const demotedId = await api.join(owner, demoted, org, "admin");

    assert.equal((await api.post(leaver, "leave", { organizationId: org })).status, 200);
    assert.ok(await changedAt(leaver), "leaving");
    assert.equal((await api.post(owner, "update-member-role", { organizationId: org, memberId: demotedId, role: "member" })).status, 200);
    const demotion = await changedAt(demoted);
    assert.ok(demotion, "a role change");
    assert.equal(await changedAt(owner), undefined);

    const refused = await api.post(owner, "leave", { organizationId: org });
    assert.equal(refused.status, 400, "the only owner cannot leave");
    assert.equal(await changedAt(owner), undefined, "a refused change is not recorded");

    await new Promise((resolve) => setTimeout(resolve, 1100)); // the deletion lands in a later second
    assert.equal((await api.post(owner, "delete", { organizationId: org })).status, 200);
    assert.ok(await changedAt(owner), "the deleter, a member too");
    assert.ok((await changedAt(demoted))! > demotion!, "the latest change of each member");
    assert.ok(await changedAt(leaver), "an earlier change stays listed");
  });

  test("since: only newer entries; a bad since is refused", async () => {
    const owner = await api.signUp("rc-owner3");
    const member = await api.signUp("rc-member3");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    const first = await changes(svc.url);
    assert.ok(Math.abs(first.body.now - Date.now()) < 5000, "now is epoch ms");
    assert.equal((await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: member.email })).status, 200);
    const later = await changes(svc.url, first.body.now);
    assert.deepEqual(later.body.changes.map((c: { subject: string }) => c.subject), [hashOf(member)]);
    assert.deepEqual((await changes(svc.url, later.body.now)).body.changes, []);
    for (const since of ["-1", "abc", "1e3", "1.5", "9".repeat(16)]) {
      const res = await request(svc.url, "GET", `/auth/membership-changes?since=${since}`);
      assert.equal(res.status, 422, `${since}: ${JSON.stringify(res.body)}`);
      assert.equal(res.headers.get("cache-control"), "no-store");
    }
  });

  test("the answer is public and cacheable for a few seconds, on both paths; other routes stay no-store", async () => {
    for (const path of ["/auth/membership-changes", "/api/auth/membership-changes"]) {
      const res = await request(svc.url, "GET", path);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("cache-control"), "public, max-age=2");
    }
    assert.equal((await request(svc.url, "GET", "/api/auth/jwks")).headers.get("cache-control"), "no-store");
  });
});

describe("size, pruning and the rate limit (a service of their own)", () => {
  let own: TestService;
  before(async () => {
    own = await startTestService();
  });
  after(async () => {
    await own?.stop();
  });

  test(`past ${MAX_CHANGES_PER_ANSWER} entries the answer holds the newest ones and says it is truncated`, async () => {
    const log = membershipChangeLog(own.database.db, 900);
    const now = Date.now();
    const ids = Array.from({ length: MAX_CHANGES_PER_ANSWER + 5 }, (_, i) => `cap-user-${i}`);
    for (const [i, id] of ids.entries()) await log.record([id], now - 60_000 + i);
    const { body } = await changes(own.url);
    assert.equal(body.truncated, true);
    assert.equal(body.changes.length, MAX_CHANGES_PER_ANSWER);
    const newest = createHash("sha256").update(ids.at(-1)!).digest("hex");
    assert.equal(body.changes[0].subject, newest, "newest first");
    assert.ok(JSON.stringify(body).length < 150 * MAX_CHANGES_PER_ANSWER, "bounded size");
    const recent = await changes(own.url, now - 60_000 + ids.length - 3);
    assert.equal(recent.body.truncated, false);
    assert.equal(recent.body.changes.length, 2);
  });

  test("entries older than a token lifetime (plus the margin) are not listed and are pruned", async () => {
    const log = membershipChangeLog(own.database.db, 900);
    const now = Date.now();
    const retentionMs = (900 + RETENTION_MARGIN_SECONDS) * 1000;
    await log.record(["old-user"], now - retentionMs - 1000);
    const oldHash = createHash("sha256").update("old-user").digest("hex");
    const { body } = await changes(own.url);
    assert.ok(!body.changes.some((c: { subject: string }) => c.subject === oldHash), "past the retention: not listed");
    assert.equal(await log.latest("old-user"), null);
    await log.record(["new-user"], now);
    const { rows } = await sql<{ n: string }>`select count(*) as n from ${sql.table(MEMBERSHIP_CHANGES_TABLE)} where changed_at < ${now - retentionMs}`.execute(own.database.db);
    assert.equal(Number(rows[0]!.n), 0, "pruned at the next record");
  });

  test("the route is rate limited per client like every route", async () => {
    // Counted in a database of its own: Better Auth's memory counters are shared by every
    // instance in a process, and the other tests' requests would count in a shared database.
    const limited = await startTestService({ AUTH_RATE_LIMIT_MAX: "3", AUTH_RATE_LIMIT_WINDOW: "60", AUTH_RATE_LIMIT_STORAGE: "database" });
    try {
      const statuses = [];
      for (let i = 0; i < 5; i++) statuses.push((await request(limited.url, "GET", "/auth/membership-changes")).status);
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
      const res = await request(limited.url, "GET", "/auth/membership-changes");
      assert.ok(res.headers.get("retry-after"));
      assert.equal(res.headers.get("cache-control"), "no-store", "a refusal is never cached");
    } finally {
      await limited.stop();
    }
  });
});
