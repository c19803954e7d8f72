// The `orgs` claim: its shape (shared schema), its bound (MAX_ORGS_PER_USER: joining past it is
// refused, and a token never carries more), roles as stored, API-key tokens and the schema migrations on an existing database.
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { loadConfig } from "../src/config.js";
import { createDatabase } from "../src/db.js";
import { migrate } from "../src/migrate.js";
import { MAX_ORGS_PER_USER } from "../src/organizations.js";
import { dropPostgresDatabase, prepareStorage, startTestService, TEST_SECRET, type TestService } from "./helpers.js";
import { orgApi, orgsOf, validateClaims, type Account } from "./org-support.js";

let svc: TestService;
let api: ReturnType<typeof orgApi>;

before(async () => {
  svc = await startTestService();
  api = orgApi(svc.url);
});
after(async () => {
  await svc?.stop();
});

let rows = 0;
/** Memberships written straight into the tables (what a race or an old row could leave behind). */
async function addMemberships(userId: string, roles: string[]): Promise<string[]> {
  const ids: string[] = [];
  for (const role of roles) {
    const n = rows++;
    const id = `org-${process.pid}-${n}`;
    const joined = new Date(Date.UTC(2020, 0, 1) + n * 1000);
    await sql`insert into organization (id, name, slug, "createdAt") values (${id}, ${"Org " + n}, ${id}, ${joined})`.execute(svc.database.db);
    await sql`insert into member (id, "organizationId", "userId", role, "createdAt")
      values (${`member-${id}`}, ${id}, ${userId}, ${role}, ${joined})`.execute(svc.database.db);
    ids.push(id);
  }
  return ids;
}

describe("the claim's shape", () => {
  const base = { sub: "u", iss: "i", aud: "a", exp: 1, iat: 1 };
  const orgs = (n: number) => Array.from({ length: n }, (_, i) => ({ id: `org-${i}`, role: "member" }));

  test("the schema takes up to MAX_ORGS_PER_USER entries of exactly {id, role} with a known role", () => {
    assert.ok(validateClaims({ ...base, orgs: [] }));
    assert.ok(validateClaims({ ...base, orgs: [{ id: "o1", role: "owner" }, { id: "o2", role: "admin" }, { id: "o3", role: "member" }] }));
    assert.ok(validateClaims({ ...base, orgs: orgs(MAX_ORGS_PER_USER) }));
    for (const bad of [
      orgs(MAX_ORGS_PER_USER + 1),
      [{ id: "o1", role: "superuser" }],
      [{ id: "o1", role: "Owner" }],
      [{ id: "o1" }],
      [{ role: "member" }],
      [{ id: "", role: "member" }],
      [{ id: "x".repeat(65), role: "member" }],
      [{ id: "   ", role: "member" }],
      [{ id: 7, role: "member" }],
      [{ id: "o1", role: "member", scope: "write" }],
      [{ id: "o1", role: "member" }, { id: "o1", role: "member" }],
      ["o1"],
      { o1: "member" },
      "o1:member",
    ]) {
      assert.ok(!validateClaims({ ...base, orgs: bad }), JSON.stringify(bad).slice(0, 80));
    }
  });

  test("roles are read as stored: the strongest known one of a list; a row with none is left out", async () => {
    const user = await api.signUp("stored");
    const [twoRoles, padded, unknown, member] = await addMemberships(user.userId, ["admin,member", " member , owner", "superuser", "member"]);
    assert.deepEqual(orgsOf(await api.claims(user)), { [twoRoles!]: "admin", [padded!]: "owner", [member!]: "member" });
    assert.ok(unknown);
  });
});

describe("the bound", () => {
  test(`a user may belong to ${MAX_ORGS_PER_USER} organizations: creating or joining one more is refused`, async () => {
    const user = await api.signUp("collector");
    const inviter = await api.signUp("inviter");
    const open = await api.createOrg(inviter);
    await addMemberships(user.userId, Array(MAX_ORGS_PER_USER - 1).fill("member"));
    const last = await api.createOrg(user, "Fiftieth");
    const refused = await api.post(user, "create", { name: "Too many", slug: `too-many-${process.pid}` });
    assert.equal(refused.status, 403, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, "you_have_reached_the_maximum_number_of_organizations");
    const invitation = (await api.invite(inviter, open, user.email)).body.id;
    const joining = await api.post(user, "accept-invitation", { invitationId: invitation });
    assert.equal(joining.status, 403, JSON.stringify(joining.body));
    assert.equal(joining.body.error.code, "organization_limit_reached");
    const claims = await api.claims(user);
    assert.equal((claims.orgs as unknown[]).length, MAX_ORGS_PER_USER);
    assert.equal(orgsOf(claims)[last], "owner");
    assert.equal(orgsOf(claims)[open], undefined);
  });

  test("past the bound (a race), the token carries the active organization and the oldest others, no more", async () => {
    const user = await api.signUp("overflow");
    const joined = await addMemberships(user.userId, Array(MAX_ORGS_PER_USER + 5).fill("member"));
    const newest = joined.at(-1)!;
    let orgs = (await api.claims(user)).orgs as { id: string }[];
    assert.deepEqual(orgs.map((o) => o.id), joined.slice(0, MAX_ORGS_PER_USER), "the oldest, in join order");
    assert.equal((await api.post(user, "set-active", { organizationId: newest })).status, 200);
    orgs = (await api.claims(user)).orgs as { id: string }[];
    assert.deepEqual(orgs.map((o) => o.id), [newest, ...joined.slice(0, MAX_ORGS_PER_USER - 1)]);
  });
});

describe("tokens exchanged for an API key", () => {
  test("carry the owner's memberships at exchange time next to the key's scope", async () => {
    const owner = await api.signUp("keyorg-owner");
    const user: Account = await api.signUp("keyorg");
    const org = await api.createOrg(owner);
    await api.join(owner, user, org, "admin");
    const key = await api.call("POST", "/auth/api-keys", { token: user.session, json: { name: "ci", scope: "read" } });
    const exchange = async () => {
      const res = await api.call("POST", "/auth/token", { headers: { "x-api-key": key.body.key } });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return api.verifiedClaims(res.body.access_token);
    };
    const claims = await exchange();
    assert.equal(claims.scope, "read", "a read key stays read, whatever the role");
    assert.equal(claims.sid, undefined);
    assert.deepEqual(orgsOf(claims), { [org]: "admin" });
    assert.equal((await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: user.email })).status, 200);
    assert.equal((await exchange()).orgs, undefined, "the next exchange drops the organization");
  });
});

describe("migrations", () => {
  const tables = async (db: ReturnType<typeof createDatabase>["db"]) => {
    const found = await sql<{ name: string }>`select table_name as name from information_schema.tables
      where table_schema = current_schema() and table_name in ('organization', 'member', 'invitation')`.execute(db);
    const column = await sql<{ name: string }>`select column_name as name from information_schema.columns
      where table_schema = current_schema() and table_name = 'session' and column_name = 'activeOrganizationId'`.execute(db);
    return [...found.rows.map((r) => r.name).sort(), ...column.rows.map((r) => `session.${r.name}`)];
  };

  test("create the organization tables, and add them to a database migrated before they existed", async () => {
    const storage = await prepareStorage();
    const config = loadConfig({ AUTH_ENV: "test", AUTH_DATA_DIR: storage.dataDir, BETTER_AUTH_SECRET: TEST_SECRET, DATABASE_URL: storage.databaseUrl });
    const database = createDatabase(config);
    try {
      await migrate(config, database);
      const all = ["invitation", "member", "organization", "session.activeOrganizationId"];
      assert.deepEqual(await tables(database.db), all);
      // A database from before organizations: the tables and the session column are missing.
      await sql`drop table invitation, member, organization`.execute(database.db);
      await sql`alter table session drop column "activeOrganizationId"`.execute(database.db);
      const changes = await migrate(config, database);
      assert.ok(changes.includes("create table organization"), changes.join("; "));
      assert.ok(changes.includes("add columns to session: activeOrganizationId"), changes.join("; "));
      assert.deepEqual(await tables(database.db), all);
      assert.deepEqual(await migrate(config, database), [], "then the schema is up to date");
    } finally {
      await database.close();
      rmSync(storage.dataDir, { recursive: true, force: true });
      if (storage.databaseUrl) await dropPostgresDatabase(storage.databaseUrl);
    }
  });
});
