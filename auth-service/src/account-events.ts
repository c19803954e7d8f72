// Account events (docs/security.md, section 10): every deleted
// user, deleted organization, removed member and changed role, written by Postgres triggers on
// Better Auth's own tables, so each event row is committed in the SAME transaction as the change
// (a change that rolls back leaves no event; every path, cascades included, writes one). The
// rag-service reads them from GET /auth/events with ACCOUNT_EVENTS_TOKEN and erases what the
// user or organization owned; the tokens minted here read the user's latest membership change
// from the same rows (issuedAt), so the rag-service can refuse older tokens.
//
// Order: each row stores the id of the transaction that wrote it (pg_current_xact_id()). The
// feed serves only rows of transactions older than every transaction still running
// (xid < pg_snapshot_xmin(pg_current_snapshot())), ordered by (xid, id): such a row can no
// longer be joined by an earlier one, so a consumer following `next_cursor` sees every committed
// event exactly once, in order, even when transactions commit out of id order.
import { timingSafeEqual, createHash } from "node:crypto";
import { Hono } from "hono";
import { sql, type Kysely } from "kysely";
import type { Config } from "./config.js";
import { errorBody } from "./errors.js";

export const EVENTS_TABLE = "auth_account_events";
/** The greatest (xid, id) ever pruned: a cursor before it may have missed events (410). */
export const PRUNED_TABLE = "auth_account_events_pruned";
export const EVENT_TYPES = ["user.deleted", "organization.deleted", "member.removed", "member.role_changed"] as const;
export type EventType = (typeof EVENT_TYPES)[number];
export const DEFAULT_LIMIT = 500;
export const MAX_LIMIT = 1000;
/** SQLSTATE the user-deletion trigger raises for a sole owner of an organization with other members. */
export const SOLE_OWNER_SQLSTATE = "P0409";

export interface AccountEvent {
  cursor: string;
  type: EventType;
  user_id: string | null;
  organization_id: string | null;
  role: string | null;
  occurred_at: number;
}

export interface EventsPage {
  events: AccountEvent[];
  next_cursor: string;
  has_more: boolean;
  retention_seconds: number;
}

/** The first whole second at or after `ms`. */
export const changedAtSeconds = (ms: number) => Math.ceil(ms / 1000);

/**
 * The `iat` of a token whose payload is read from `startedAt` (epoch ms, taken before anything
 * is read) on: that second, or the second of the user's latest membership change when later (a
 * change in the same second), so a token minted after a committed change is never taken for an
 * older one. The change is read before the memberships: a change seen here was committed before.
 */
export function issuedAt(startedAt: number, latestChange: number | null): number {
  const second = Math.floor(startedAt / 1000);
  return latestChange === null ? second : Math.max(second, changedAtSeconds(latestChange));
}

/**
 * The schema: the events table, the prune watermark and the triggers. Idempotent (run by
 * migrate.ts at every start, after Better Auth's migrator created its tables, so a changed
 * function body is installed by the next start). Column names are Better Auth's (camelCase, quoted).
 */
export async function migrateAccountEvents(db: Kysely<any>): Promise<void> {
  const statements = [
    sql`create table if not exists ${sql.table(EVENTS_TABLE)} (
      id bigserial primary key,
      xid xid8 not null default pg_current_xact_id(),
      type text not null,
      user_id text,
      organization_id text,
      role text,
      occurred_at bigint not null default (floor(extract(epoch from clock_timestamp()) * 1000))::bigint
    )`,
    sql`create index if not exists auth_account_events_order on ${sql.table(EVENTS_TABLE)} (xid, id)`,
    sql`create index if not exists auth_account_events_occurred_at on ${sql.table(EVENTS_TABLE)} (occurred_at)`,
    sql`create index if not exists auth_account_events_user on ${sql.table(EVENTS_TABLE)} (user_id, occurred_at)`,
    sql`create table if not exists ${sql.table(PRUNED_TABLE)} (
      singleton boolean primary key default true check (singleton),
      xid xid8 not null,
      id bigint not null
    )`,
    // Better Auth stores several roles as "admin,member".
    sql`create or replace function auth_role_includes(roles text, wanted text) returns boolean
      language sql immutable as $$ select exists (select 1 from unnest(string_to_array(roles, ',')) r where trim(r) = wanted) $$`,
    sql.raw(`create or replace function auth_account_events_user_before_delete() returns trigger language plpgsql as $fn$
      begin
        -- Two co-owners deleting their accounts at once must not both pass the check below:
        -- the second waits here until the first commits, then sees it gone.
        perform 1 from organization where id in (select "organizationId" from member where "userId" = OLD.id) order by id for update;
        if exists (
          select 1 from member m
          where m."userId" = OLD.id and auth_role_includes(m.role, 'owner')
            and exists (select 1 from member o where o."organizationId" = m."organizationId" and o."userId" <> OLD.id)
            and not exists (select 1 from member o where o."organizationId" = m."organizationId" and o."userId" <> OLD.id
                            and auth_role_includes(o.role, 'owner'))
        ) then
          raise exception using errcode = '${SOLE_OWNER_SQLSTATE}',
            message = 'sole_owner: the user is the only owner of an organization that has other members';
        end if;
        -- Organizations the user is the only member of go with the account.
        delete from organization g
          where g.id in (select "organizationId" from member where "userId" = OLD.id)
            and not exists (select 1 from member o where o."organizationId" = g.id and o."userId" <> OLD.id);
        -- API keys name their owner in "referenceId", without a foreign key.
        delete from apikey where "referenceId" = OLD.id;
        return OLD;
      end $fn$`),
    sql.raw(`create or replace function auth_account_events_record() returns trigger language plpgsql as $fn$
      begin
        if TG_TABLE_NAME = 'user' then
          insert into ${EVENTS_TABLE} (type, user_id) values ('user.deleted', OLD.id);
        elsif TG_TABLE_NAME = 'organization' then
          insert into ${EVENTS_TABLE} (type, organization_id) values ('organization.deleted', OLD.id);
        elsif TG_OP = 'DELETE' then
          insert into ${EVENTS_TABLE} (type, user_id, organization_id) values ('member.removed', OLD."userId", OLD."organizationId");
        else
          insert into ${EVENTS_TABLE} (type, user_id, organization_id, role) values ('member.role_changed', NEW."userId", NEW."organizationId", NEW.role);
        end if;
        return null;
      end $fn$`),
    // `occurred_at` is taken again when the transaction commits (a deferred trigger), so a token
    // whose minting began before the commit, and read the old memberships, is older than the
    // change's second (issuedAt) unless it began in the last instant before the commit.
    sql.raw(`create or replace function auth_account_events_stamp() returns trigger language plpgsql as $fn$
      begin
        update ${EVENTS_TABLE} set occurred_at = greatest(occurred_at, (floor(extract(epoch from clock_timestamp()) * 1000))::bigint)
          where id = NEW.id;
        return null;
      end $fn$`),
    sql`drop trigger if exists auth_account_events_stamp on ${sql.table(EVENTS_TABLE)}`,
    sql`create constraint trigger auth_account_events_stamp after insert on ${sql.table(EVENTS_TABLE)}
      deferrable initially deferred for each row execute function auth_account_events_stamp()`,
    sql`drop trigger if exists auth_account_events_user_before_delete on "user"`,
    sql`create trigger auth_account_events_user_before_delete before delete on "user"
      for each row execute function auth_account_events_user_before_delete()`,
    sql`drop trigger if exists auth_account_events_user_deleted on "user"`,
    sql`create trigger auth_account_events_user_deleted after delete on "user"
      for each row execute function auth_account_events_record()`,
    sql`drop trigger if exists auth_account_events_organization_deleted on organization`,
    sql`create trigger auth_account_events_organization_deleted after delete on organization
      for each row execute function auth_account_events_record()`,
    sql`drop trigger if exists auth_account_events_member_removed on member`,
    sql`create trigger auth_account_events_member_removed after delete on member
      for each row execute function auth_account_events_record()`,
    sql`drop trigger if exists auth_account_events_member_role_changed on member`,
    sql`create trigger auth_account_events_member_role_changed after update of role on member
      for each row when (OLD.role is distinct from NEW.role) execute function auth_account_events_record()`,
  ];
  // One transaction: a replica deleting a user while another one restarts never finds the
  // triggers dropped and not yet re-created (other sessions wait for the commit).
  await db.transaction().execute(async (trx) => {
    for (const statement of statements) await statement.execute(trx);
  });
}

const CURSOR = /^(\d{1,20}):(\d{1,19})$/;
const EPOCH_MS = /^\d{1,15}$/;
const LIMIT = /^\d{1,4}$/;

export class FeedError extends Error {
  constructor(
    readonly status: 400 | 401 | 410,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface Cursor {
  xid: string;
  id: string;
}

function parseCursor(raw: string): Cursor {
  const match = CURSOR.exec(raw);
  if (!match) throw new FeedError(400, "invalid_cursor", "after must be a cursor returned by this feed");
  return { xid: BigInt(match[1]!).toString(), id: BigInt(match[2]!).toString() };
}

const formatCursor = (c: Cursor) => `${c.xid}:${c.id}`;
const before = (a: Cursor, b: Cursor) => BigInt(a.xid) < BigInt(b.xid) || (a.xid === b.xid && BigInt(a.id) < BigInt(b.id));

export interface FeedQuery {
  after?: string;
  since?: string;
  limit?: string;
}

export interface AccountEventLog {
  retentionSeconds: number;
  /** Epoch ms of the user's latest membership change (removed, role changed) still kept, or null. */
  latestMembershipChange(userId: string): Promise<number | null>;
  /** One page of the feed (validates the query: FeedError 400/410). */
  page(query: FeedQuery): Promise<EventsPage>;
  /** Deletes events older than the retention and raises the prune watermark; returns how many went. */
  prune(now?: number): Promise<number>;
}

export function accountEventLog(db: Kysely<any>, retentionDays: number): AccountEventLog {
  const events = sql.table(EVENTS_TABLE);
  const pruned = sql.table(PRUNED_TABLE);
  const retentionSeconds = retentionDays * 86_400;
  return {
    retentionSeconds,
    async latestMembershipChange(userId) {
      const { rows } = await sql<{ latest: string | null }>`
        select max(occurred_at) as latest from ${events}
        where user_id = ${userId} and type in ('member.removed', 'member.role_changed')`.execute(db);
      return rows[0]?.latest == null ? null : Number(rows[0].latest);
    },
    async page(query) {
      let limit = DEFAULT_LIMIT;
      if (query.limit !== undefined) {
        limit = LIMIT.test(query.limit) ? Number(query.limit) : 0;
        if (limit < 1 || limit > MAX_LIMIT) throw new FeedError(400, "invalid_limit", `limit must be an integer from 1 to ${MAX_LIMIT}`);
      }
      if (query.after !== undefined && query.since !== undefined) {
        throw new FeedError(400, "invalid_cursor", "pass either after or since, not both");
      }
      let after: Cursor = { xid: "0", id: "0" };
      let since = 0;
      if (query.after !== undefined) {
        after = parseCursor(query.after);
        const { rows } = await sql<Cursor>`select xid::text as xid, id::text as id from ${pruned}`.execute(db);
        if (rows[0] && before(after, rows[0])) {
          throw new FeedError(410, "cursor_expired", "events after this cursor were pruned; restart from the oldest retained event");
        }
      } else if (query.since !== undefined) {
        if (!EPOCH_MS.test(query.since)) throw new FeedError(400, "invalid_cursor", "since must be epoch milliseconds (a non-negative integer)");
        since = Number(query.since);
      }
      // One statement, one snapshot: `horizon` is the oldest transaction still running; every
      // row below it is final.
      const { rows } = await sql<{ horizon: string; xid: string | null; id: string | null; type: EventType; user_id: string | null; organization_id: string | null; role: string | null; occurred_at: string }>`
        with s as (select pg_snapshot_xmin(pg_current_snapshot()) as horizon)
        select s.horizon::text as horizon, e.xid::text as xid, e.id::text as id, e.type, e.user_id, e.organization_id, e.role, e.occurred_at
        from s left join lateral (
          select * from ${events} ev
          where ev.xid < s.horizon and (ev.xid, ev.id) > (${after.xid}::xid8, ${after.id}::bigint) and ev.occurred_at >= ${since}
          order by ev.xid, ev.id limit ${limit + 1}
        ) e on true
        order by e.xid, e.id`.execute(db);
      const found = rows.filter((r) => r.xid !== null && r.id !== null);
      const hasMore = found.length > limit;
      const served = found.slice(0, limit).map((r) => ({
        cursor: formatCursor({ xid: r.xid!, id: r.id! }),
        type: r.type,
        user_id: r.user_id,
        organization_id: r.organization_id,
        role: r.role,
        occurred_at: Number(r.occurred_at),
      }));
      let next: Cursor;
      if (hasMore) next = parseCursor(served[served.length - 1]!.cursor);
      else {
        // Every row below the horizon was served: the next page starts at it (ids start at 1),
        // never before where the caller already was.
        const horizon = { xid: rows[0]!.horizon, id: "0" };
        next = before(horizon, after) ? after : horizon;
      }
      return { events: served, next_cursor: formatCursor(next), has_more: hasMore, retention_seconds: retentionSeconds };
    },
    async prune(now = Date.now()) {
      const { rows } = await sql<{ count: string }>`
        with gone as (delete from ${events} where occurred_at < ${now - retentionSeconds * 1000} returning xid, id),
        top as (select xid, id from gone order by xid desc, id desc limit 1),
        mark as (
          insert into ${pruned} as p (singleton, xid, id) select true, xid, id from top
          on conflict (singleton) do update set xid = excluded.xid, id = excluded.id
          where (excluded.xid, excluded.id) > (p.xid, p.id)
        )
        select count(*)::text as count from gone`.execute(db);
      return Number(rows[0]?.count ?? 0);
    },
  };
}

const digest = (s: string) => createHash("sha256").update(s).digest();

/** Constant-time comparison of a presented bearer token with the configured one (any lengths). */
export function tokenMatches(presented: string | undefined, expected: string | undefined): boolean {
  if (!presented || !expected) return false;
  return timingSafeEqual(digest(presented), digest(expected));
}

/**
 * GET /auth/events: the feed, for the rag-service only (Authorization: Bearer
 * ACCOUNT_EVENTS_TOKEN); pruning runs before each answer, so no timer is needed.
 */
export function accountEventsRoutes(log: AccountEventLog, config: Pick<Config, "accountEvents">) {
  const r = new Hono();
  r.get("/", async (c) => {
    const presented = c.req.header("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
    if (!tokenMatches(presented, config.accountEvents.token)) {
      return c.json(errorBody("unauthorized", "the account events feed needs Authorization: Bearer <ACCOUNT_EVENTS_TOKEN>"), 401);
    }
    try {
      await log.prune();
      return c.json(await log.page({ after: c.req.query("after"), since: c.req.query("since"), limit: c.req.query("limit") }));
    } catch (err) {
      if (err instanceof FeedError) return c.json(errorBody(err.code, err.message), err.status);
      throw err;
    }
  });
  return r;
}
