// The account events feed (src/account-events.ts): which changes write which events (every path,
// cascades included), that an event exists iff its change committed, the cursor order with
// transactions committing out of id order (real Postgres), pruning and 410, the feed's
// authentication and input validation, and the `iat` of tokens minted around a change.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { decodeJwt } from "jose";
import { sql } from "kysely";
import pg from "pg";
import { accountEventLog, changedAtSeconds, EVENTS_TABLE } from "../src/account-events.js";
import { DB_KIND, EVENTS_TOKEN, PASSWORD, request, startTestService, type TestService } from "./helpers.js";
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

interface Event {
  cursor: string;
  type: string;
  user_id: string | null;
  organization_id: string | null;
  role: string | null;
  occurred_at: number;
}

async function feed(query = "", url = svc.url) {
  return request(url, "GET", `/auth/events${query}`, { token: EVENTS_TOKEN });
}

/**
 * Every event after `cursor` (following next_cursor page by page) and the last next_cursor. The
 * feed holds back rows while an older transaction is still running, anywhere on the server
 * (other suites share it): this reads on until every transaction begun before the call has ended.
 */
async function drain(cursor?: string, on: TestService = svc): Promise<{ events: Event[]; cursor: string }> {
  const { rows } = await sql<{ xid: string }>`select pg_current_xact_id()::text as xid`.execute(on.database.db);
  const target = BigInt(rows[0]!.xid);
  const events: Event[] = [];
  for (;;) {
    const res = await feed(`?limit=1000${cursor ? `&after=${cursor}` : ""}`, on.url);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    events.push(...res.body.events);
    cursor = res.body.next_cursor as string;
    if (res.body.has_more) continue;
    if (BigInt(cursor.split(":")[0]!) > target) return { events, cursor };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The current end of the feed: events after it are the ones a test causes. */
async function mark(): Promise<string> {
  return (await drain()).cursor;
}

const brief = (events: Event[]) => events.map((e) => [e.type, e.user_id, e.organization_id, e.role]);

async function deleteAccount(who: Account, password = PASSWORD) {
  return api.call("DELETE", "/auth/me", { token: who.session, json: { password } });
}

describe("every path writes its events", () => {
  test("removal, leaving and a role change: one event each, naming the member and the organization", async () => {
    const owner = await api.signUp("ev-owner");
    const removed = await api.signUp("ev-removed");
    const leaver = await api.signUp("ev-leaver");
    const promoted = await api.signUp("ev-promoted");
    const org = await api.createOrg(owner);
    await api.join(owner, removed, org);
    await api.join(owner, leaver, org);
    const promotedMember = await api.join(owner, promoted, org);
    const start = await mark();
    assert.deepEqual((await drain(start)).events, [], "creating and joining write nothing");

    assert.equal((await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: removed.email })).status, 200);
    assert.equal((await api.post(leaver, "leave", { organizationId: org })).status, 200);
    assert.equal((await api.post(owner, "update-member-role", { organizationId: org, memberId: promotedMember, role: "admin" })).status, 200);
    // The only owner cannot leave: refused, nothing written.
    assert.equal((await api.post(owner, "leave", { organizationId: org })).status, 400);

    const { events } = await drain(start);
    assert.deepEqual(brief(events), [
      ["member.removed", removed.userId, org, null],
      ["member.removed", leaver.userId, org, null],
      ["member.role_changed", promoted.userId, org, "admin"],
    ]);
    for (const e of events) assert.ok(Math.abs(e.occurred_at - Date.now()) < 60_000, "epoch ms");
  });

  test("deleting an organization: member.removed for every member, then organization.deleted", async () => {
    const owner = await api.signUp("ev-org-owner");
    const member = await api.signUp("ev-org-member");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    const start = await mark();
    assert.equal((await api.post(member, "delete", { organizationId: org })).status, 403, "a member may not delete it");
    assert.equal((await api.post(owner, "delete", { organizationId: org })).status, 200);
    const events = brief((await drain(start)).events);
    assert.equal(events.length, 3, JSON.stringify(events));
    assert.deepEqual(events.at(-1), ["organization.deleted", null, org, null]);
    assert.deepEqual(
      events.slice(0, 2).sort(),
      [["member.removed", owner.userId, org, null], ["member.removed", member.userId, org, null]].sort(),
    );
  });
});

describe("account deletion (DELETE /auth/me, Better Auth's /delete-user)", () => {
  test("the account, its sessions, API keys and memberships go; a solo organization goes with it; the events say so", async () => {
    const who = await api.signUp("ev-deleted");
    const other = await api.signUp("ev-other-owner");
    const solo = await api.createOrg(who, "Solo");
    const shared = await api.createOrg(other, "Shared");
    await api.join(other, who, shared, "admin");
    const key = await api.call("POST", "/auth/api-keys", { token: who.session, json: { name: "k", scope: "read" } });
    assert.equal(key.status, 201);
    const second = await api.call("POST", "/auth/login", { json: { email: who.email, password: PASSWORD } });
    assert.equal(second.status, 200);
    const accessToken = (await api.call("POST", "/auth/token", { token: who.session })).body.access_token as string;
    assert.equal((await api.call("GET", "/auth/me", { token: accessToken })).status, 200);
    const start = await mark();

    const res = await deleteAccount(who);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(res.body, { success: true });

    const written = (await drain(start)).events;
    assert.deepEqual(
      brief(written).sort(),
      [
        ["user.deleted", who.userId, null, null],
        ["member.removed", who.userId, solo, null],
        ["organization.deleted", null, solo, null],
        ["member.removed", who.userId, shared, null],
      ].sort(),
    );
    assert.equal(new Set(written.map((e) => e.cursor.split(":")[0])).size, 1, "all written by one transaction");
    // Nothing of the account works any more.
    for (const session of [who.session, second.body.session_token]) {
      assert.equal((await api.call("POST", "/auth/token", { token: session })).status, 401, "a session can no longer mint");
    }
    assert.equal((await api.call("GET", "/auth/me", { token: accessToken })).status, 401, "an access token is refused at /auth/me");
    const exchanged = await api.call("POST", "/auth/token", { headers: { "x-api-key": key.body.key } });
    assert.equal(exchanged.status, 401, JSON.stringify(exchanged.body));
    assert.equal((await api.call("POST", "/auth/login", { json: { email: who.email, password: PASSWORD } })).status, 401);
    // The other organization stays, without them.
    const members = await api.get(other, `list-members?organizationId=${shared}`);
    assert.equal(members.status, 200);
    assert.deepEqual(members.body.members.map((m: { userId: string }) => m.userId), [other.userId]);
    const { rows } = await sql<{ n: string }>`select count(*)::text as n from apikey where "referenceId" = ${who.userId}`.execute(svc.database.db);
    assert.equal(rows[0]!.n, "0", "API key rows are gone");
  });

  test("a sole owner of an organization with other members gets 409 sole_owner; nothing changes; after a transfer it works", async () => {
    const owner = await api.signUp("ev-sole");
    const member = await api.signUp("ev-sole-member");
    const org = await api.createOrg(owner);
    const memberId = await api.join(owner, member, org);
    const start = await mark();

    const refused = await deleteAccount(owner);
    assert.equal(refused.status, 409, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, "sole_owner");
    assert.match(refused.body.error.message, /owner/);
    assert.deepEqual((await drain(start)).events, [], "a refused deletion writes no event");
    assert.equal((await api.call("POST", "/auth/token", { token: owner.session })).status, 200, "sessions and sign-in intact");
    assert.equal((await api.call("POST", "/auth/login", { json: { email: owner.email, password: PASSWORD } })).status, 200);

    assert.equal((await api.post(owner, "update-member-role", { organizationId: org, memberId, role: "owner" })).status, 200);
    assert.equal((await deleteAccount(owner)).status, 200);
    const events = brief((await drain(start)).events);
    assert.deepEqual(events[0], ["member.role_changed", member.userId, org, "owner"]);
    assert.deepEqual(events.slice(1).sort(), [
      ["member.removed", owner.userId, org, null],
      ["user.deleted", owner.userId, null, null],
    ].sort());
    assert.equal((await api.get(member, `get-full-organization?organizationId=${org}`)).status, 200, "the organization stays");
  });

  test("the password is required and checked, on both routes", async () => {
    const who = await api.signUp("ev-password");
    const start = await mark();
    const wrong = await deleteAccount(who, "not the password at all");
    assert.equal(wrong.status, 403);
    assert.equal(wrong.body.error.code, "invalid_password");
    const missing = await api.call("DELETE", "/auth/me", { token: who.session, json: {} });
    assert.equal(missing.status, 422);
    const badJson = await api.call("DELETE", "/auth/me", { token: who.session, body: "{" });
    assert.equal(badJson.status, 400);
    assert.equal((await api.call("DELETE", "/auth/me", { json: { password: PASSWORD } })).status, 401, "no session");
    // Better Auth deletes a "fresh" session's account without a password: not here.
    const direct = await api.call("POST", "/api/auth/delete-user", { token: who.session, json: {} });
    assert.equal(direct.status, 400, JSON.stringify(direct.body));
    assert.equal(direct.body.error.code, "password_required");
    assert.equal((await api.call("POST", "/auth/token", { token: who.session })).status, 200, "still there");
    assert.deepEqual((await drain(start)).events, []);
    const ok = await api.call("POST", "/api/auth/delete-user", { token: who.session, json: { password: PASSWORD } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual(brief((await drain(start)).events), [["user.deleted", who.userId, null, null]]);
  });
});

describe("an event exists iff its change committed", () => {
  test("a change rolled back leaves no event; the same change committed leaves one", async () => {
    const owner = await api.signUp("ev-tx-owner");
    const member = await api.signUp("ev-tx-member");
    const stays = await api.signUp("ev-tx-stays");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    await api.join(owner, stays, org);
    const start = await mark();
    const db = svc.database.db;
    const removeMember = (trx: typeof db) =>
      sql`delete from member where "userId" = ${member.userId} and "organizationId" = ${org}`.execute(trx);
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await removeMember(trx);
        // Still the only owner of an organization with a member: the trigger refuses.
        await sql`delete from "user" where id = ${owner.userId}`.execute(trx);
      }),
      /sole_owner/,
    );
    await assert.rejects(
      db.transaction().execute(async (trx) => {
        await removeMember(trx);
        throw new Error("fails half-way");
      }),
      /half-way/,
    );
    assert.deepEqual((await drain(start)).events, []);
    assert.equal((await api.get(member, `get-full-organization?organizationId=${org}`)).status, 200, "still a member");
    await db.transaction().execute(async (trx) => removeMember(trx));
    assert.deepEqual(brief((await drain(start)).events), [["member.removed", member.userId, org, null]]);
  });
});

describe("the `iat` of tokens minted around a change", () => {
  test("a token minted before a removal is older than the change's second; tokens minted after are not (session and API key)", async () => {
    const owner = await api.signUp("ev-iat-owner");
    const member = await api.signUp("ev-iat-member");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    const key = await api.call("POST", "/auth/api-keys", { token: member.session, json: { name: "k", scope: "read" } });
    const start = await mark();
    const beforeIat = decodeJwt((await api.call("POST", "/auth/token", { token: member.session })).body.access_token).iat!;
    assert.equal((await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: member.email })).status, 200);
    const [removal] = (await drain(start)).events;
    assert.equal(removal!.type, "member.removed");
    const changedAt = changedAtSeconds(removal!.occurred_at);
    assert.ok(beforeIat < changedAt, "minted before: older than the change");
    const afterIat = decodeJwt((await api.call("POST", "/auth/token", { token: member.session })).body.access_token).iat!;
    assert.ok(afterIat >= changedAt);
    const exchanged = await api.call("POST", "/auth/token", { headers: { "x-api-key": key.body.key } });
    assert.equal(exchanged.status, 200);
    assert.ok(decodeJwt(exchanged.body.access_token).iat! >= changedAt);
  });

  test("a change recorded in a later second than now lifts the iat of the next token to it", async () => {
    const who = await api.signUp("ev-iat-future");
    const future = Date.now() + 5_000;
    await sql`insert into ${sql.table(EVENTS_TABLE)} (type, user_id, organization_id, occurred_at)
      values ('member.removed', ${who.userId}, 'org-x', ${future})`.execute(svc.database.db);
    const iat = decodeJwt((await api.call("POST", "/auth/token", { token: who.session })).body.access_token).iat!;
    assert.equal(iat, changedAtSeconds(future));
  });
});

describe("the feed: authentication, paging, validation", () => {
  test("anonymous, wrong and other-length tokens get 401 unauthorized", async () => {
    const wrongSameLength = EVENTS_TOKEN.slice(0, -1) + (EVENTS_TOKEN.endsWith("x") ? "y" : "x");
    const cases: Record<string, string>[] = [
      {},
      { authorization: `Bearer ${wrongSameLength}` },
      { authorization: `Bearer ${EVENTS_TOKEN}extra` },
      { authorization: `Bearer ${EVENTS_TOKEN.slice(0, 10)}` },
      { authorization: EVENTS_TOKEN },
      { authorization: `Basic ${Buffer.from(`x:${EVENTS_TOKEN}`).toString("base64")}` },
    ];
    for (const headers of cases) {
      const res = await request(svc.url, "GET", "/auth/events", { headers });
      assert.equal(res.status, 401, JSON.stringify(headers));
      assert.equal(res.body.error.code, "unauthorized");
      assert.equal(res.headers.get("cache-control"), "no-store");
    }
    const ok = await feed();
    assert.equal(ok.status, 200);
    assert.deepEqual(Object.keys(ok.body).sort(), ["events", "has_more", "next_cursor", "retention_seconds"]);
    assert.equal(ok.body.retention_seconds, 30 * 86_400);
  });

  test("a service without ACCOUNT_EVENTS_TOKEN answers 401 to everyone", async () => {
    const unset = await startTestService({ ACCOUNT_EVENTS_TOKEN: undefined });
    try {
      for (const token of [undefined, EVENTS_TOKEN, ""]) {
        const res = await request(unset.url, "GET", "/auth/events", { token });
        assert.equal(res.status, 401);
      }
    } finally {
      await unset.stop();
    }
  });

  test("bad limit, after and since: 400 with a code; the old /auth/membership-changes is gone", async () => {
    for (const limit of ["0", "1001", "-1", "abc", "1.5", "", "99999"]) {
      const res = await feed(`?limit=${limit}`);
      assert.equal(res.status, 400, limit);
      assert.equal(res.body.error.code, "invalid_limit");
    }
    for (const query of ["after=abc", "after=1", "after=1:", "after=:1", "after=-1:2", "after=1:2:3", `after=${"9".repeat(21)}:1`, "since=-1", "since=abc", `since=${"9".repeat(16)}`, "after=1:1&since=1"]) {
      const res = await feed(`?${query}`);
      assert.equal(res.status, 400, query);
      assert.equal(res.body.error.code, "invalid_cursor", query);
    }
    for (const path of ["/auth/membership-changes", "/api/auth/membership-changes"]) {
      assert.equal((await request(svc.url, "GET", path)).status, 404, path);
    }
  });

  test("paging: limit pages in order with has_more; next_cursor moves on with no events; since filters by time", async () => {
    const owner = await api.signUp("ev-page-owner");
    const org = await api.createOrg(owner);
    const members: Account[] = [];
    for (let i = 0; i < 3; i++) {
      const m = await api.signUp(`ev-page-${i}`);
      await api.join(owner, m, org);
      members.push(m);
    }
    const start = await mark();
    const sinceMs = Date.now();
    for (const m of members) assert.equal((await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: m.email })).status, 200);
    await drain(start); // until the feed has them all
    const first = await feed(`?limit=2&after=${start}`);
    assert.equal(first.body.events.length, 2);
    assert.equal(first.body.has_more, true);
    assert.equal(first.body.next_cursor, first.body.events[1].cursor);
    const second = await feed(`?limit=2&after=${first.body.next_cursor}`);
    assert.equal(second.body.events.length, 1);
    assert.equal(second.body.has_more, false);
    assert.deepEqual(
      [...first.body.events, ...second.body.events].map((e: Event) => e.user_id),
      members.map((m) => m.userId),
      "in the order they happened",
    );
    const empty = await feed(`?after=${second.body.next_cursor}`);
    assert.deepEqual(empty.body.events, []);
    assert.equal(typeof empty.body.next_cursor, "string");
    assert.deepEqual((await feed(`?after=${empty.body.next_cursor}`)).body.events, [], "an empty page's cursor is not behind");
    // (The iat test above wrote one event dated a few seconds ahead: left out here.)
    const ours = (events: Event[]) => events.filter((e) => e.organization_id === org).map((e) => e.user_id);
    const since = await feed(`?since=${sinceMs}`);
    assert.deepEqual(ours(since.body.events), members.map((m) => m.userId));
    assert.deepEqual(ours((await feed(`?since=${sinceMs + 600_000}`)).body.events), []);
    assert.deepEqual((await feed(`?since=${Date.now() + 600_000}`)).body.events, []);
    const all = await feed("?limit=1000");
    assert.ok(all.body.events.length >= 3, "no after and no since: from the oldest retained event");
  });
});

describe("retention (a service of its own)", () => {
  test("events past ACCOUNT_EVENTS_RETENTION_DAYS are pruned; a cursor before them gets 410 cursor_expired", async () => {
    const own = await startTestService({ ACCOUNT_EVENTS_RETENTION_DAYS: "1" });
    try {
      const ownApi = orgApi(own.url);
      const owner = await ownApi.signUp("ret-owner");
      const org = await ownApi.createOrg(owner);
      const a = await ownApi.signUp("ret-a");
      const b = await ownApi.signUp("ret-b");
      await ownApi.join(owner, a, org);
      await ownApi.join(owner, b, org);
      assert.equal((await ownApi.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: a.email })).status, 200);
      assert.equal((await feed("", own.url)).body.retention_seconds, 86_400);
      const [eventA] = (await drain(undefined, own)).events;
      assert.equal(eventA!.user_id, a.userId);
      // Event A turns two days old (the clock moved on, as seen by the prune); B is new.
      await sql`update ${sql.table(EVENTS_TABLE)} set occurred_at = occurred_at - ${2 * 86_400_000}`.execute(own.database.db);
      assert.equal((await ownApi.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: b.email })).status, 200);
      const fromStart = await request(own.url, "GET", "/auth/events?after=0:0", { token: EVENTS_TOKEN });
      assert.equal(fromStart.status, 410, "A was pruned before this consumer saw it");
      assert.equal(fromStart.body.error.code, "cursor_expired");
      const fromA = await drain(eventA!.cursor, own);
      assert.deepEqual(fromA.events.map((e: Event) => e.user_id), [b.userId], "a consumer that saw A missed nothing");
      const oldest = await feed("", own.url);
      assert.deepEqual(oldest.body.events.map((e: Event) => e.user_id), [b.userId], "restart from the oldest retained");
      // The prune itself, with a clock a day ahead: nothing left, the watermark moves.
      assert.equal(await accountEventLog(own.database.db, 1).prune(Date.now() + 2 * 86_400_000), 1);
      assert.equal((await feed(`?after=${fromA.cursor}`, own.url)).status, 200, "a consumer at the end missed nothing");
      assert.equal((await feed(`?after=${eventA!.cursor}`, own.url)).status, 410);
    } finally {
      await own.stop();
    }
  });
});

describe("concurrent transactions on real Postgres", { skip: DB_KIND !== "postgres" && "Postgres only (PGlite has one connection)" }, () => {
  async function connect(): Promise<pg.Client> {
    const client = new pg.Client({ connectionString: svc.config.databaseUrl });
    await client.connect();
    return client;
  }

  test("a transaction that began first but commits last is not skipped: the feed waits for it", async () => {
    const owner = await api.signUp("ev-race-owner");
    const early = await api.signUp("ev-race-early");
    const late = await api.signUp("ev-race-late");
    const org = await api.createOrg(owner);
    await api.join(owner, early, org);
    await api.join(owner, late, org);
    const start = await mark();
    const [one, two] = [await connect(), await connect()];
    try {
      await one.query("BEGIN");
      await one.query(`delete from member where "userId" = $1`, [early.userId]); // takes the lower xid
      await two.query("BEGIN");
      await two.query(`delete from member where "userId" = $1`, [late.userId]);
      await two.query("COMMIT"); // the higher xid commits first
      const during = await feed(`?after=${start}`);
      assert.deepEqual(during.body.events, [], "the later transaction waits behind the running earlier one");
      await one.query("COMMIT");
      const { events } = await drain(during.body.next_cursor);
      assert.deepEqual(events.map((e) => e.user_id), [early.userId, late.userId], "both, once, in transaction order");
    } finally {
      await one.end();
      await two.end();
    }
  });

  test("two co-owners deleting their accounts at once: one wins, the other is refused as sole owner", async () => {
    const first = await api.signUp("ev-co-1");
    const secondOwner = await api.signUp("ev-co-2");
    const member = await api.signUp("ev-co-member");
    const org = await api.createOrg(first);
    await api.join(first, secondOwner, org, "owner");
    await api.join(first, member, org);
    const start = await mark();
    const [one, two] = [await connect(), await connect()];
    try {
      await one.query("BEGIN");
      await one.query(`delete from "user" where id = $1`, [first.userId]);
      await two.query("BEGIN");
      const loser = two.query(`delete from "user" where id = $1`, [secondOwner.userId]).then(
        () => null,
        (err: { code?: string }) => err,
      );
      await one.query("COMMIT");
      const err = await loser;
      assert.equal(err?.code, "P0409", "the second waits for the first, then sees itself the only owner");
      await two.query("ROLLBACK");
    } finally {
      await one.end();
      await two.end();
    }
    const events = brief((await drain(start)).events);
    assert.deepEqual(events.sort(), [
      ["member.removed", first.userId, org, null],
      ["user.deleted", first.userId, null, null],
    ].sort());
    assert.equal((await api.call("POST", "/auth/token", { token: secondOwner.session })).status, 200, "the second owner stays");
  });
});

describe("occurred_at is the commit's time", () => {
  test("a change whose transaction stays open is stamped when it commits, not when it was made", async () => {
    const owner = await api.signUp("ev-stamp-owner");
    const member = await api.signUp("ev-stamp-member");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    const start = await mark();
    let changedAt = 0;
    await svc.database.db.transaction().execute(async (trx) => {
      await sql`delete from member where "userId" = ${member.userId}`.execute(trx);
      changedAt = Date.now();
      // The transaction stays open across a second boundary (a slow commit).
      await sql`select pg_sleep(1.1)`.execute(trx);
    });
    const committedBy = Date.now();
    const [event] = (await drain(start)).events;
    assert.equal(event!.type, "member.removed");
    assert.ok(event!.occurred_at >= changedAt + 1000 && event!.occurred_at <= committedBy, JSON.stringify({ event, changedAt, committedBy }));
  });
});
