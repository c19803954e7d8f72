// Organization invitations by mail (a real SMTP server catches them): the invitee follows the
// link, signs up (verifying the address first, EMAIL_VERIFICATION=required), signs in and
// accepts; expired, withdrawn, declined, used and someone else's invitations get clear errors.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { sql } from "kysely";
import { assertWellFormed, fragmentValue, startInbox, type Inbox } from "./mail-support.js";
import { BASE_URL, PASSWORD, request, startTestService, uniqueEmail, type TestService } from "./helpers.js";
import { uniqueSlug, type Account } from "./org-support.js";

const APP_URL = "http://localhost:5173/";
let inbox: Inbox;
let svc: TestService;
const call = (method: string, path: string, opts: Parameters<typeof request>[3] = {}) =>
  request(svc.url, method, path, { ...opts, headers: { origin: BASE_URL, ...opts.headers } });
const post = (who: Account, path: string, json: unknown) => call("POST", `/api/auth/organization/${path}`, { token: who.session, json });

before(async () => {
  inbox = await startInbox();
  svc = await startTestService({ SMTP_URL: inbox.smtpUrl, APP_URL, EMAIL_VERIFICATION: "required" });
});
after(async () => {
  await svc?.stop();
  await inbox?.close();
});

/** Signs up, follows the verification mail, and returns the signed-in account. */
async function verifiedAccount(tag: string, email = uniqueEmail(tag.replace(/\W/g, "").toLowerCase())): Promise<Account> {
  const res = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: tag } });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const mail = await inbox.next(email, /Confirm your email address/);
  const verified = await call("GET", `/api/auth/verify-email?token=${encodeURIComponent(fragmentValue(mail.link, "verify-email"))}`);
  assert.equal(verified.status, 200);
  const login = await call("POST", "/auth/login", { json: { email, password: PASSWORD } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  return { email, session: login.body.session_token, userId: login.body.user.id };
}

async function organization(owner: Account, name: string): Promise<string> {
  const res = await post(owner, "create", { name, slug: uniqueSlug() });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body.id;
}

async function invite(owner: Account, org: string, email: string): Promise<string> {
  const res = await post(owner, "invite-member", { organizationId: org, email, role: "member" });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  // Each invitation mail carries its own id: wait for this one's.
  const link = await new Promise<string>((resolve, reject) => {
    const deadline = Date.now() + 20_000;
    const look = () => {
      const found = inbox.to(email).find((m) => m.link.endsWith(`#invitation=${encodeURIComponent(res.body.id)}`));
      if (found) resolve(found.link);
      else if (Date.now() > deadline) reject(new Error(`no invitation mail for ${res.body.id}`));
      else void svc.mailer.idle().then(() => setImmediate(look));
    };
    look();
  });
  return fragmentValue(link, "invitation");
}

describe("invitations by mail", () => {
  let owner: Account;
  let org: string;
  before(async () => {
    owner = await verifiedAccount("Owner Person");
    org = await organization(owner, "Tidewater Lab");
  });

  test("a new person: the mail names the organization and inviter, its link leads to accepting after sign-up", async () => {
    const email = uniqueEmail("newcomer");
    const res = await post(owner, "invite-member", { organizationId: org, email, role: "member" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const mail = await inbox.next(email, /You are invited to join Tidewater Lab/);
    assertWellFormed(mail, APP_URL);
    assert.match(mail.text, /Owner Person invited you to join Tidewater Lab as member/);
    const invitationId = fragmentValue(mail.link, "invitation");
    assert.equal(invitationId, res.body.id);

    const invitee = await verifiedAccount("newcomer", email);
    const seen = await call("GET", `/api/auth/organization/get-invitation?id=${invitationId}`, { token: invitee.session });
    assert.equal(seen.status, 200, JSON.stringify(seen.body));
    assert.equal(seen.body.organizationName, "Tidewater Lab");
    const accepted = await post(invitee, "accept-invitation", { invitationId });
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    assert.equal(accepted.body.member.organizationId, org);

    const reused = await post(invitee, "accept-invitation", { invitationId });
    assert.equal(reused.status, 409, JSON.stringify(reused.body));
    assert.equal(reused.body.error.code, "invitation_already_accepted");
  });

  test("expired, withdrawn and declined invitations say so to their recipient", async () => {
    const invitee = await verifiedAccount("late");
    const expired = await invite(owner, org, invitee.email);
    await sql`update invitation set "expiresAt" = ${new Date(Date.now() - 1000).toISOString()} where id = ${expired}`.execute(svc.database.db);
    const late = await post(invitee, "accept-invitation", { invitationId: expired });
    assert.equal(late.status, 410, JSON.stringify(late.body));
    assert.equal(late.body.error.code, "invitation_expired");
    const lateView = await call("GET", `/api/auth/organization/get-invitation?id=${expired}`, { token: invitee.session });
    assert.equal(lateView.body.error.code, "invitation_expired");

    const withdrawn = await invite(owner, org, invitee.email);
    assert.equal((await post(owner, "cancel-invitation", { invitationId: withdrawn })).status, 200);
    const canceled = await post(invitee, "accept-invitation", { invitationId: withdrawn });
    assert.equal(canceled.status, 410);
    assert.equal(canceled.body.error.code, "invitation_canceled");

    const declined = await invite(owner, org, invitee.email);
    assert.equal((await post(invitee, "reject-invitation", { invitationId: declined })).status, 200);
    const afterDecline = await post(invitee, "accept-invitation", { invitationId: declined });
    assert.equal(afterDecline.status, 410);
    assert.equal(afterDecline.body.error.code, "invitation_rejected");
    const members = await call("GET", `/api/auth/organization/get-full-organization?organizationId=${org}`, { token: owner.session });
    assert.ok(!JSON.stringify(members.body.members).includes(invitee.userId), "none of them made a member");
  });

  test("someone else's invitation: 403 while pending, and its state is never told to them", async () => {
    const invitee = await verifiedAccount("rightful");
    const stranger = await verifiedAccount("stranger");
    const id = await invite(owner, org, invitee.email);
    const foreign = await post(stranger, "accept-invitation", { invitationId: id });
    assert.equal(foreign.status, 403, JSON.stringify(foreign.body));
    assert.equal(foreign.body.error.code, "you_are_not_the_recipient_of_the_invitation");
    assert.equal((await post(owner, "cancel-invitation", { invitationId: id })).status, 200);
    const afterCancel = await post(stranger, "accept-invitation", { invitationId: id });
    assert.equal(afterCancel.status, 400, "not INVITATION_CANCELED: the stranger learns nothing");
    assert.equal(afterCancel.body.error.code, "invitation_not_found");
    assert.equal((await post(stranger, "accept-invitation", { invitationId: "no-such-invitation" })).body.error.code, "invitation_not_found");
  });

  test("a verified invitee lists their pending invitations", async () => {
    const invitee = await verifiedAccount("lister");
    const id = await invite(owner, org, invitee.email);
    const listed = await call("GET", "/api/auth/organization/list-user-invitations", { token: invitee.session });
    assert.equal(listed.status, 200, JSON.stringify(listed.body));
    assert.deepEqual(listed.body.map((i: { id: string }) => i.id), [id]);
  });
});
