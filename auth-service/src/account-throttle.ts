// Per-account throttling of failed sign-ins, beside Better Auth's per-IP limiter: failures are
// counted per normalized email (hashed: no address in keys or rows), in the same store as the
// limiter (memory, the database, or Redis). From `threshold` failures on, the account answers
// 429 with Retry-After for base * 2^(failures - threshold) seconds (capped at `maxSeconds`),
// whatever the source address. A successful sign-in clears the count.
import { createHash } from "node:crypto";
import { APIError, createAuthMiddleware, isAPIError } from "better-auth/api";
import type { BetterAuthPlugin } from "better-auth";
import { sql, type Kysely } from "kysely";
import type { Redis } from "ioredis";
import { failOpen } from "./limiter-health.js";

export interface AccountThrottlePolicy {
  threshold: number;
  baseSeconds: number;
  maxSeconds: number;
  /** Failures older than this (seconds, counted from the last failure) start a new count. */
  windowSeconds: number;
}

export interface FailureCount {
  failures: number;
  /** Epoch milliseconds of the last failure. */
  lastFailure: number;
}

export interface AccountThrottleStore {
  get(key: string): Promise<FailureCount | null>;
  /** Atomically counts one failure at `now` (restarting the count when the last one is older than `windowMs`). */
  recordFailure(key: string, now: number, windowMs: number, ttlMs: number): Promise<FailureCount>;
  clear(key: string): Promise<void>;
}

export const THROTTLE_TABLE = "auth_account_throttle";

export function accountKey(email: unknown): string | null {
  if (typeof email !== "string" || email.trim() === "") return null;
  return "acct:" + createHash("sha256").update(email.trim().toLowerCase()).digest("hex");
}

/** Seconds the account must wait, 0 when it may try now. */
export function lockSeconds(count: FailureCount | null, policy: AccountThrottlePolicy, now: number): number {
  if (!count || count.failures < policy.threshold) return 0;
  if (now - count.lastFailure > policy.windowSeconds * 1000) return 0;
  const exponent = Math.min(count.failures - policy.threshold, 30);
  const lockMs = Math.min(policy.baseSeconds * 2 ** exponent, policy.maxSeconds) * 1000;
  const remaining = count.lastFailure + lockMs - now;
  return remaining > 0 ? Math.ceil(remaining / 1000) : 0;
}

export function memoryThrottleStore(): AccountThrottleStore {
  const entries = new Map<string, FailureCount & { expiresAt: number }>();
  const prune = (now: number) => {
    for (const [key, entry] of entries) if (entry.expiresAt <= now) entries.delete(key);
  };
  return {
    async get(key) {
      const entry = entries.get(key);
      return entry && entry.expiresAt > Date.now() ? entry : null;
    },
    async recordFailure(key, now, windowMs, ttlMs) {
      if (entries.size > 100_000) prune(now);
      const entry = entries.get(key);
      const failures = entry && now - entry.lastFailure <= windowMs ? entry.failures + 1 : 1;
      const next = { failures, lastFailure: now, expiresAt: now + ttlMs };
      entries.set(key, next);
      return next;
    },
    async clear(key) {
      entries.delete(key);
    },
  };
}

/** Rows in THROTTLE_TABLE (created by migrate.ts); one atomic upsert per failure. */
export function databaseThrottleStore(db: Kysely<any>): AccountThrottleStore {
  const table = sql.table(THROTTLE_TABLE);
  return {
    async get(key) {
      const { rows } = await sql<{ failures: number; last_failure: string }>`
        select failures, last_failure from ${table} where key = ${key}`.execute(db);
      const row = rows[0];
      return row ? { failures: row.failures, lastFailure: Number(row.last_failure) } : null;
    },
    async recordFailure(key, now, windowMs, ttlMs) {
      const { rows } = await sql<{ failures: number }>`
        insert into ${table} as t (key, failures, last_failure) values (${key}, 1, ${now})
        on conflict (key) do update set
          failures = case when t.last_failure < ${now - windowMs} then 1 else t.failures + 1 end,
          last_failure = ${now}
        returning failures`.execute(db);
      // Rows of this key's kind only ("acct:" failures, "mail:" caps): each kind has its own ttl.
      const kind = key.slice(0, key.indexOf(":") + 1);
      await sql`delete from ${table} where left(key, ${kind.length}) = ${kind} and last_failure < ${now - ttlMs}`.execute(db);
      return { failures: rows[0]!.failures, lastFailure: now };
    },
    async clear(key) {
      await sql`delete from ${table} where key = ${key}`.execute(db);
    },
  };
}

const RECORD_FAILURE = `
local last = redis.call('HGET', KEYS[1], 'l')
local failures = 1
if last and tonumber(ARGV[1]) - tonumber(last) <= tonumber(ARGV[2]) then
  failures = tonumber(redis.call('HGET', KEYS[1], 'f')) + 1
end
redis.call('HSET', KEYS[1], 'f', failures, 'l', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return failures`;

export function redisThrottleStore(redis: Redis, prefix: string): AccountThrottleStore {
  return {
    async get(key) {
      const [f, l] = await redis.hmget(prefix + key, "f", "l");
      return f && l ? { failures: Number(f), lastFailure: Number(l) } : null;
    },
    async recordFailure(key, now, windowMs, ttlMs) {
      const failures = (await redis.eval(RECORD_FAILURE, 1, prefix + key, String(now), String(windowMs), String(ttlMs))) as number;
      return { failures, lastFailure: now };
    },
    async clear(key) {
      await redis.del(prefix + key);
    },
  };
}

const SIGN_IN_PATH = "/sign-in/email";

/** Better Auth plugin: checks the account before /sign-in/email, counts the outcome after it. */
export function accountThrottle(store: AccountThrottleStore, policy: AccountThrottlePolicy): BetterAuthPlugin {
  const windowMs = policy.windowSeconds * 1000;
  const ttlMs = (policy.windowSeconds + policy.maxSeconds) * 1000;
  const matcher = (ctx: { path?: string }) => ctx.path === SIGN_IN_PATH;
  return {
    id: "account-throttle",
    hooks: {
      before: [
        {
          matcher,
          handler: createAuthMiddleware(async (ctx) => {
            const key = accountKey((ctx.body as { email?: unknown } | undefined)?.email);
            if (!key) return;
            const count = await failOpen("account throttle", () => store.get(key), null);
            const wait = lockSeconds(count, policy, Date.now());
            if (wait > 0) {
              throw new APIError(
                "TOO_MANY_REQUESTS",
                { code: "ACCOUNT_THROTTLED", message: "Too many failed sign-ins for this account. Please try again later." },
                { "Retry-After": String(wait), "X-Retry-After": String(wait) },
              );
            }
          }),
        },
      ],
      after: [
        {
          matcher,
          handler: createAuthMiddleware(async (ctx) => {
            const key = accountKey((ctx.body as { email?: unknown } | undefined)?.email);
            if (!key) return;
            const returned = ctx.context.returned;
            if (isAPIError(returned)) {
              if (returned.statusCode === 401) {
                await failOpen("account throttle", () => store.recordFailure(key, Date.now(), windowMs, ttlMs), null);
              }
            } else if (!(returned instanceof Response) || returned.ok) {
              await failOpen("account throttle", () => store.clear(key), undefined);
            }
          }),
        },
      ],
    },
  };
}
