// Membership changes that can reduce a user's access (removed, left, role changed, organization
// deleted), one row per user with the time of the latest, so the rag-service can refuse access
// tokens minted before the change within seconds instead of at their `exp` (docs/security.md,
// section 1). The rag-service polls GET /auth/membership-changes; the list names users only by
// the SHA-256 of their id. Times: stored in epoch ms; published as `changed_at`, the first whole
// second at or after the change, and every token minted after a recorded change has an `iat` at
// least that (issuedAt below), so "iat < changed_at" is exactly "minted before the change".
import { createHash } from "node:crypto";
import type { BetterAuthPlugin } from "better-auth";
import { APIError, createAuthEndpoint, createAuthMiddleware, isAPIError } from "better-auth/api";
import { sql, type Kysely } from "kysely";
import type { MemberStore } from "./organizations.js";

export const MEMBERSHIP_CHANGES_TABLE = "auth_membership_changes";
/** Most entries in one answer (~110 bytes each): past it the answer is `truncated` (see since()). */
export const MAX_CHANGES_PER_ANSWER = 1000;
/**
 * Entries are kept for the token lifetime plus this margin (a verifier accepts a token a few
 * seconds of leeway past its `exp`); older ones can no longer matter and are pruned.
 */
export const RETENTION_MARGIN_SECONDS = 60;
/** How long a shared cache may serve an answer: it adds at most this to the rag-service's delay. */
export const CACHE_SECONDS = 2;
/** Rows per insert statement (an organization deletion records every member at once). */
const INSERT_BATCH = 500;

/** How the public list names a user: not the id itself, so the list names nobody. */
export function subjectHash(userId: string): string {
  return createHash("sha256").update(userId).digest("hex");
}

/** The first whole second at or after `ms`. */
export const changedAtSeconds = (ms: number) => Math.ceil(ms / 1000);

/**
 * The `iat` of a token whose payload is read from `startedAt` (epoch ms, taken before anything
 * is read) on: that second, or the second of the user's latest change when later (a change in
 * the same second), so a token minted after a recorded change is never taken for an older one.
 * Reading the change first and the memberships second keeps it safe: a change seen here was
 * committed before the memberships are read.
 */
export function issuedAt(startedAt: number, latestChange: number | null): number {
  const second = Math.floor(startedAt / 1000);
  return latestChange === null ? second : Math.max(second, changedAtSeconds(latestChange));
}

export interface MembershipChange {
  subject: string;
  changed_at: number;
}

export interface MembershipChangesAnswer {
  changes: MembershipChange[];
  /** Epoch ms on this service's clock: the next poll's `since`, less a margin (commits in flight). */
  now: number;
  /** How long an entry is listed (token lifetime + margin): a poller may forget entries older. */
  retention_seconds: number;
  /** More entries than MAX_CHANGES_PER_ANSWER: `changes` holds the newest ones. */
  truncated: boolean;
}

export interface MembershipChangeLog {
  retentionSeconds: number;
  /** Records a change for each user at `now` (epoch ms) and prunes entries past the retention. */
  record(userIds: Iterable<string>, now?: number): Promise<void>;
  /** Epoch ms of the user's latest recorded change still kept, or null. */
  latest(userId: string, now?: number): Promise<number | null>;
  /** Entries changed after `since` (epoch ms), newest first, at most MAX_CHANGES_PER_ANSWER. */
  since(since: number, now?: number): Promise<MembershipChangesAnswer>;
}

/** Rows in MEMBERSHIP_CHANGES_TABLE (created by migrate.ts). */
export function membershipChangeLog(db: Kysely<any>, tokenLifetimeSeconds: number): MembershipChangeLog {
  const table = sql.table(MEMBERSHIP_CHANGES_TABLE);
  const retentionSeconds = tokenLifetimeSeconds + RETENTION_MARGIN_SECONDS;
  const oldestKept = (now: number) => now - retentionSeconds * 1000;
  return {
    retentionSeconds,
    async record(userIds, now = Date.now()) {
      const subjects = [...new Set(userIds)].map(subjectHash);
      for (let i = 0; i < subjects.length; i += INSERT_BATCH) {
        const rows = subjects.slice(i, i + INSERT_BATCH).map((subject) => sql`(${subject}, ${now})`);
        await sql`insert into ${table} as t (subject, changed_at) values ${sql.join(rows)}
          on conflict (subject) do update set changed_at = greatest(t.changed_at, excluded.changed_at)`.execute(db);
      }
      await sql`delete from ${table} where changed_at < ${oldestKept(now)}`.execute(db);
    },
    async latest(userId, now = Date.now()) {
      const { rows } = await sql<{ changed_at: string }>`
        select changed_at from ${table} where subject = ${subjectHash(userId)} and changed_at >= ${oldestKept(now)}`.execute(db);
      return rows[0] ? Number(rows[0].changed_at) : null;
    },
    async since(since, now = Date.now()) {
      const { rows } = await sql<{ subject: string; changed_at: string }>`
        select subject, changed_at from ${table} where changed_at > ${Math.max(since, oldestKept(now) - 1)}
        order by changed_at desc, subject limit ${MAX_CHANGES_PER_ANSWER + 1}`.execute(db);
      return {
        changes: rows.slice(0, MAX_CHANGES_PER_ANSWER).map((r) => ({ subject: r.subject, changed_at: changedAtSeconds(Number(r.changed_at)) })),
        now,
        retention_seconds: retentionSeconds,
        truncated: rows.length > MAX_CHANGES_PER_ANSWER,
      };
    },
  };
}

/**
 * Better Auth organization hooks that record changes: a removal and a role change (a promotion
 * too: harmless, the next token carries the new role sooner) for that member; a deletion for
 * every member, listed before the organization and its members are deleted, recorded after.
 * Leaving has no hook in Better Auth 1.7: membershipChanges() records it.
 */
export function recordingOrganizationHooks(store: () => Promise<MemberStore>, log: MembershipChangeLog) {
  const deleting = new Map<string, string[]>();
  return {
    afterRemoveMember: async ({ member }: { member: { userId: string } }) => log.record([member.userId]),
    afterUpdateMemberRole: async ({ member }: { member: { userId: string } }) => log.record([member.userId]),
    beforeDeleteOrganization: async ({ organization }: { organization: { id: string } }) => {
      const members = await (await store()).findMany<{ userId: string }>({
        model: "member",
        where: [{ field: "organizationId", value: organization.id }],
      });
      deleting.set(organization.id, members.map((m) => m.userId));
    },
    afterDeleteOrganization: async ({ organization }: { organization: { id: string } }) => {
      const members = deleting.get(organization.id) ?? [];
      deleting.delete(organization.id);
      await log.record(members);
    },
  };
}

function parseSince(raw: unknown): number {
  if (raw === undefined || raw === "") return 0;
  if (typeof raw !== "string" || !/^\d{1,15}$/.test(raw)) {
    throw new APIError("BAD_REQUEST", { code: "INVALID_SINCE", message: "since must be epoch milliseconds (a non-negative integer)" });
  }
  return Number(raw);
}

/**
 * GET /api/auth/membership-changes?since=<epoch ms> (also /auth/membership-changes): public and
 * cacheable for CACHE_SECONDS, limited per IP by Better Auth's rate limiter like every route;
 * and the record of a member leaving (an after hook on /organization/leave).
 */
export function membershipChanges(log: MembershipChangeLog): BetterAuthPlugin {
  return {
    id: "membership-changes",
    endpoints: {
      membershipChanges: createAuthEndpoint("/membership-changes", { method: "GET" }, async (ctx) => {
        const answer = await log.since(parseSince((ctx.query as Record<string, unknown> | undefined)?.since));
        ctx.setHeader("Cache-Control", `public, max-age=${CACHE_SECONDS}`);
        return ctx.json(answer);
      }),
    },
    hooks: {
      after: [
        {
          matcher: (ctx) => ctx.path === "/organization/leave",
          handler: createAuthMiddleware(async (ctx) => {
            const returned = ctx.context.returned;
            if (isAPIError(returned) || returned instanceof Response) return;
            const userId = (returned as { userId?: unknown } | undefined)?.userId;
            if (typeof userId === "string") await log.record([userId]);
          }),
        },
      ],
    },
  };
}
