// Organizations (Better Auth's organization plugin) through /api/auth/organization/*: create,
// invite (returned, listed, delivered through the pluggable sender), accept / reject / cancel,
// roles, remove, leave, set active; each change shows in the caller's next access JWT.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { InvitationMessage } from "../src/organizations.js";
import { startTestService, type TestService } from "./helpers.js";
import { orgApi, orgsOf, uniqueSlug, type Account } from "./org-support.js";

let svc: TestService;
let api: ReturnType<typeof orgApi>;
const delivered: InvitationMessage[] = [];

before(async () => {
  svc = await startTestService({}, undefined, undefined, async (message) => {
    delivered.push(message);
  });
  api = orgApi(svc.url);
});
after(async () => {
  await svc?.stop();
});

function assertRefused(res: { status: number; body: any }, status: number, code?: string) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  if (code) assert.equal(res.body?.error?.code, code, JSON.stringify(res.body));
}

describe("creating an organization", () => {
  test("the creator is its owner, it becomes active, and the next token carries it", async () => {
    const owner = await api.signUp("creator");
    assert.equal((await api.claims(owner)).orgs, undefined, "no organizations: no claim");
    const res = await api.post(owner, "create", { name: "Acme Research", slug: uniqueSlug("acme") });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.members[0].role, "owner");
    assert.deepEqual(orgsOf(await api.claims(owner)), { [res.body.id]: "owner" });
    const listed = await api.get(owner, "list");
    assert.deepEqual(listed.body.map((o: { id: string }) => o.id), [res.body.id]);
    const full = await api.get(owner, "get-full-organization");
    assert.equal(full.body.id, res.body.id, "the new organization is the active one");
  });

  test("bad names, slugs and a taken slug are refused, and nothing is created", async () => {
    const owner = await api.signUp("badorg");
    const slug = uniqueSlug();
    // 400 for a bound, 422 for control characters (src/input-policy.ts).
    for (const [body, status] of [
      [{ name: "", slug: uniqueSlug() }, 400],
      [{ name: "n".repeat(201), slug: uniqueSlug() }, 400],
      [{ name: "Nul\u0000", slug: uniqueSlug() }, 422],
      [{ name: "Ok", slug: "s".repeat(101) }, 400],
      [{ name: "Ok", slug: "   " }, 400],
      [{ name: "Ok", slug: uniqueSlug(), logo: "x".repeat(2049) }, 400],
    ] as const) {
      assertRefused(await api.post(owner, "create", body), status, "invalid_input");
    }
    assert.equal((await api.post(owner, "create", { name: "First", slug })).status, 200);
    assertRefused(await api.post(owner, "create", { name: "Second", slug }), 400, "organization_already_exists");
    assert.equal((await api.get(owner, "list")).body.length, 1);
  });

  test("organization routes need a session", async () => {
    assertRefused(await api.call("POST", "/api/auth/organization/create", { json: { name: "x", slug: uniqueSlug() } }), 401);
    assertRefused(await api.call("GET", "/api/auth/organization/list"), 401);
  });
});

describe("invitations", () => {
  let owner: Account;
  let org: string;
  before(async () => {
    owner = await api.signUp("inviter");
    org = await api.createOrg(owner);
  });

  test("an invitation is returned, listed for the organization and handed to the sender", async () => {
    const invitee = await api.signUp("invitee");
    const res = await api.invite(owner, org, invitee.email);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.status, "pending");
    assert.equal(res.body.role, "member");
    assert.equal(res.body.organizationId, org);
    const listed = await api.get(owner, `list-invitations?organizationId=${org}`);
    assert.ok(listed.body.some((i: { id: string }) => i.id === res.body.id));
    const sent = delivered.find((m) => m.invitationId === res.body.id);
    assert.deepEqual(sent && { ...sent, expiresAt: sent.expiresAt.toISOString() }, {
      invitationId: res.body.id,
      organizationId: org,
      organizationName: "Team",
      inviterName: "inviter",
      email: invitee.email,
      role: "member",
      expiresAt: res.body.expiresAt,
    });
    // The invitee sees it by id (the id is what the sender delivers) and accepts it.
    const seen = await api.get(invitee, `get-invitation?id=${res.body.id}`);
    assert.equal(seen.status, 200, JSON.stringify(seen.body));
    assert.equal(seen.body.organizationId, org);
    const accepted = await api.post(invitee, "accept-invitation", { invitationId: res.body.id });
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.equal(accepted.body.member.role, "member");
    assert.deepEqual(orgsOf(await api.claims(invitee)), { [org]: "member" });
    assertRefused(await api.post(invitee, "accept-invitation", { invitationId: res.body.id }), 409, "invitation_already_accepted");
  });

  test("only the invited address may accept; a declined or canceled invitation cannot be accepted", async () => {
    const invitee = await api.signUp("decliner");
    const stranger = await api.signUp("stranger");
    const declined = (await api.invite(owner, org, invitee.email)).body.id;
    assertRefused(await api.post(stranger, "accept-invitation", { invitationId: declined }), 403, "you_are_not_the_recipient_of_the_invitation");
    assertRefused(await api.get(stranger, `get-invitation?id=${declined}`), 403);
    const rejected = await api.post(invitee, "reject-invitation", { invitationId: declined });
    assert.equal(rejected.status, 200, JSON.stringify(rejected.body));
    assert.equal(rejected.body.invitation.status, "rejected");
    assertRefused(await api.post(invitee, "accept-invitation", { invitationId: declined }), 410, "invitation_rejected");

    const canceled = (await api.invite(owner, org, invitee.email)).body.id;
    assert.equal((await api.post(owner, "cancel-invitation", { invitationId: canceled })).status, 200);
    assertRefused(await api.post(invitee, "accept-invitation", { invitationId: canceled }), 410, "invitation_canceled");
    assert.equal((await api.claims(invitee)).orgs, undefined);
    assert.equal((await api.claims(stranger)).orgs, undefined);
  });

  test("a role must be exactly one of owner, admin, member", async () => {
    const invitee = await api.signUp("roles");
    for (const role of ["superuser", ["admin", "member"], "admin,member", "", 1]) {
      assertRefused(await api.post(owner, "invite-member", { organizationId: org, email: invitee.email, role }), 400);
    }
    const listed = await api.get(owner, `list-invitations?organizationId=${org}`);
    assert.ok(!listed.body.some((i: { email: string }) => i.email === invitee.email));
  });
});

describe("roles", () => {
  test("members cannot invite; admins invite members and admins but not owners; owners promote", async () => {
    const owner = await api.signUp("owner");
    const admin = await api.signUp("admin");
    const member = await api.signUp("member");
    const org = await api.createOrg(owner);
    await api.join(owner, admin, org, "admin");
    const memberId = await api.join(admin, member, org, "member");
    const outsider = await api.signUp("outsider");
    assertRefused(await api.invite(member, org, outsider.email), 403);
    assertRefused(await api.invite(admin, org, outsider.email, "owner"), 403);
    assert.equal((await api.invite(admin, org, outsider.email, "admin")).status, 200);
    assert.deepEqual(orgsOf(await api.claims(admin)), { [org]: "admin" });

    assertRefused(await api.post(member, "update-member-role", { organizationId: org, memberId, role: "admin" }), 403);
    assert.deepEqual(orgsOf(await api.claims(member)), { [org]: "member" });
    const promoted = await api.post(owner, "update-member-role", { organizationId: org, memberId, role: "admin" });
    assert.equal(promoted.status, 200, JSON.stringify(promoted.body));
    assert.deepEqual(orgsOf(await api.claims(member)), { [org]: "admin" }, "the next token has the new role");
    assertRefused(await api.post(owner, "update-member-role", { organizationId: org, memberId, role: ["owner", "member"] }), 400);
  });
});

describe("leaving and removal", () => {
  test("a removed member's next token lacks the organization; their session is not revoked", async () => {
    const owner = await api.signUp("remover");
    const member = await api.signUp("removed");
    const org = await api.createOrg(owner);
    const other = await api.createOrg(member, "Their own");
    await api.join(owner, member, org);
    assert.deepEqual(orgsOf(await api.claims(member)), { [org]: "member", [other]: "owner" });

    const removed = await api.post(owner, "remove-member", { organizationId: org, memberIdOrEmail: member.email });
    assert.equal(removed.status, 200, JSON.stringify(removed.body));
    // The same session mints on: its next token is read from the member table, without `org`.
    assert.deepEqual(orgsOf(await api.claims(member)), { [other]: "owner" });
    assertRefused(await api.post(member, "set-active", { organizationId: org }), 403);
    assertRefused(await api.get(member, `list-members?organizationId=${org}`), 403);
  });

  test("a member can leave; the only owner cannot", async () => {
    const owner = await api.signUp("stayer");
    const member = await api.signUp("leaver");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    assert.equal((await api.post(member, "leave", { organizationId: org })).status, 200);
    assert.equal((await api.claims(member)).orgs, undefined);
    assertRefused(await api.post(owner, "leave", { organizationId: org }), 400, "you_cannot_leave_the_organization_as_the_only_owner");
    assert.deepEqual(orgsOf(await api.claims(owner)), { [org]: "owner" });
  });

  test("a deleted organization is gone from every member's next token", async () => {
    const owner = await api.signUp("deleter");
    const member = await api.signUp("orphan");
    const org = await api.createOrg(owner);
    await api.join(owner, member, org);
    assertRefused(await api.post(member, "delete", { organizationId: org }), 403);
    assert.equal((await api.post(owner, "delete", { organizationId: org })).status, 200);
    assert.equal((await api.claims(owner)).orgs, undefined);
    assert.equal((await api.claims(member)).orgs, undefined);
  });
});

describe("the active organization", () => {
  test("set-active picks which organization comes first in the claim; only a member may pick one", async () => {
    const user = await api.signUp("switcher");
    const first = await api.createOrg(user, "First");
    const second = await api.createOrg(user, "Second");
    assert.deepEqual(((await api.claims(user)).orgs as { id: string }[]).map((o) => o.id), [second, first]);
    const res = await api.post(user, "set-active", { organizationId: first });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(((await api.claims(user)).orgs as { id: string }[]).map((o) => o.id), [first, second]);
    const outsider = await api.signUp("intruder");
    assertRefused(await api.post(outsider, "set-active", { organizationId: first }), 403);
    assert.equal((await api.claims(outsider)).orgs, undefined);
  });
});
