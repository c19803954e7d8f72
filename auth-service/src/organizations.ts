// Teams: Better Auth's organization plugin (organizations, members with one role each of
// owner | admin | member, invitations) and the access JWT's `orgs` claim, read from the member
// table every time a token is minted, so a membership change shows in the next token (and
// tokens minted before a change that can reduce access are refused by the rag-service within
// seconds: the change is an account event, src/account-events.ts).
import { APIError } from "better-auth/api";
import { organization } from "better-auth/plugins";
import { safeLog } from "./safe-log.js";

/** Strongest first: the order picks a role when a stored value holds several. */
export const ORG_ROLES = ["owner", "admin", "member"] as const;
export type OrgRole = (typeof ORG_ROLES)[number];

/**
 * The most organizations a user may belong to, and so the most `orgs` entries a token carries
 * (shared-schemas/jwt-claims.schema.json `maxItems`; the rag-service refuses a longer claim).
 * Creating or joining one more is refused (403 ORGANIZATION_LIMIT_REACHED).
 */
export const MAX_ORGS_PER_USER = 50;

export interface OrgClaim {
  id: string;
  role: OrgRole;
}

/** The slice of Better Auth's database adapter this module uses. */
export interface MemberStore {
  findMany<T>(query: {
    model: string;
    where?: { field: string; value: string }[];
    sortBy?: { field: string; direction: "asc" | "desc" };
  }): Promise<T[]>;
  count(query: { model: string; where?: { field: string; value: string }[] }): Promise<number>;
}

/** Better Auth stores several roles as "admin,member": the strongest known one, or null. */
export function claimRole(stored: string): OrgRole | null {
  const held = new Set(stored.split(",").map((role) => role.trim()));
  return ORG_ROLES.find((role) => held.has(role)) ?? null;
}

/**
 * The caller's memberships for the access JWT: `[{id, role}]`, the active organization first,
 * then by join date. A membership without a known role is left out (never promoted). Joining is
 * capped at MAX_ORGS_PER_USER; should a race ever let a user past it, the token still carries at
 * most that many (the active one and the oldest others) and a warning is logged: a token may
 * carry fewer organizations than the user has, never more, never a stronger role.
 */
export async function orgsClaim(store: MemberStore, userId: string, activeOrganizationId?: string | null): Promise<OrgClaim[]> {
  const rows = await store.findMany<{ organizationId: string; role: string }>({
    model: "member",
    where: [{ field: "userId", value: userId }],
    sortBy: { field: "createdAt", direction: "asc" },
  });
  const claims: OrgClaim[] = [];
  for (const row of rows) {
    const role = claimRole(row.role);
    if (!role || claims.some((c) => c.id === row.organizationId)) continue;
    const claim = { id: row.organizationId, role };
    if (row.organizationId === activeOrganizationId) claims.unshift(claim);
    else claims.push(claim);
  }
  if (claims.length > MAX_ORGS_PER_USER) {
    safeLog("warn", `user ${userId} belongs to ${claims.length} organizations; the token carries ${MAX_ORGS_PER_USER}`);
  }
  return claims.slice(0, MAX_ORGS_PER_USER);
}

/** `{orgs}` for a token payload, or nothing when the user belongs to no organization. */
export async function orgsPayload(store: MemberStore, userId: string, activeOrganizationId?: string | null) {
  const orgs = await orgsClaim(store, userId, activeOrganizationId);
  return orgs.length ? { orgs } : {};
}

/** What an invitation sender gets: where to deliver it and the id the invitee accepts. */
export interface InvitationMessage {
  invitationId: string;
  organizationId: string;
  organizationName: string;
  inviterName: string;
  email: string;
  role: string;
  expiresAt: Date;
}

/**
 * Delivers an invitation. The service's sender mails the invitee a link to the app carrying
 * `invitationId` (src/account-mail.ts mailInvitationSender); tests may pass their own.
 */
export type InvitationSender = (message: InvitationMessage) => Promise<void>;

function limitReached(): APIError {
  return new APIError("FORBIDDEN", {
    code: "ORGANIZATION_LIMIT_REACHED",
    message: `a user may belong to at most ${MAX_ORGS_PER_USER} organizations`,
  });
}

/**
 * Better Auth's organization plugin. `store()` is the instance's adapter (bound late, like the
 * key exchange's instance). Teams and dynamic roles stay off: the roles are exactly ORG_ROLES.
 * Removals, departures, role changes and deletions are recorded by database triggers
 * (src/account-events.ts), in the change's own transaction: no hook here.
 */
export function organizationPlugin(store: () => Promise<MemberStore>, sendInvitation: InvitationSender) {
  async function refuseBeyondLimit(userId: string): Promise<void> {
    const memberships = await (await store()).count({ model: "member", where: [{ field: "userId", value: userId }] });
    if (memberships >= MAX_ORGS_PER_USER) throw limitReached();
  }
  return organization({
    // Counts the organizations the user belongs to, whoever created them.
    organizationLimit: MAX_ORGS_PER_USER,
    organizationHooks: {
      beforeAcceptInvitation: async ({ user }) => refuseBeyondLimit(user.id),
      beforeAddMember: async ({ member }) => refuseBeyondLimit(member.userId),
    },
    sendInvitationEmail: async ({ invitation, organization: org, inviter }) =>
      sendInvitation({
        invitationId: invitation.id,
        organizationId: org.id,
        organizationName: org.name,
        inviterName: inviter.user.name,
        email: invitation.email,
        role: invitation.role,
        expiresAt: new Date(invitation.expiresAt),
      }),
  });
}
