// Two-factor codes (TOTP, RFC 6238) through Better Auth's `twoFactor` plugin: enable with the
// password (-> an otpauth:// URI and ten one-time backup codes), confirm with a first code,
// disable with the password; a password sign-in of such an account opens no session until a
// code is given (/two-factor/verify-totp or /two-factor/verify-backup-code, authorised by the
// signed `two_factor` challenge cookie the sign-in set). What we add around the plugin:
// - a used TOTP code is refused when given again (the plugin accepts it for its whole window):
//   one atomic claim per account and code in TOTP_CLAIMS_TABLE;
// - wrong codes count against the account in the same store and with the same policy as wrong
//   passwords (src/account-throttle.ts), under their own key: 429 + Retry-After once locked.
// Backup codes are removed from the encrypted list with a compare-and-set by the plugin itself
// (two requests with the same code: one wins).
import { createHash } from "node:crypto";
import { APIError, createAuthMiddleware, isAPIError } from "better-auth/api";
import type { BetterAuthPlugin } from "better-auth";
import { twoFactor } from "better-auth/plugins";
import { sql, type Kysely } from "kysely";
import { lockSeconds, type AccountThrottlePolicy, type AccountThrottleStore } from "./account-throttle.js";
import { failOpen } from "./limiter-health.js";

/** Better Auth's challenge cookie (without the `better-auth.` prefix) and its lifetime. */
export const TWO_FACTOR_COOKIE = "two_factor";
export const TWO_FACTOR_CHALLENGE_SECONDS = 600;
export const TOTP_PERIOD_SECONDS = 30;
export const TOTP_CLAIMS_TABLE = "auth_totp_claims";

const VERIFY_TOTP = "/two-factor/verify-totp";
const VERIFY_BACKUP_CODE = "/two-factor/verify-backup-code";
const VERIFY_PATHS = new Set([VERIFY_TOTP, VERIFY_BACKUP_CODE]);
// The plugin accepts the codes of the previous, current and next period: a claim outlives them.
const CLAIM_TTL_MS = 4 * TOTP_PERIOD_SECONDS * 1000;

export function twoFactorPlugin(issuer: string) {
  return twoFactor({
    issuer,
    totpOptions: { period: TOTP_PERIOD_SECONDS, digits: 6 },
    twoFactorCookieMaxAge: TWO_FACTOR_CHALLENGE_SECONDS,
    backupCodeOptions: { amount: 10, length: 10, storeBackupCodes: "encrypted" },
  });
}

export async function migrateTotpClaims(db: Kysely<any>): Promise<void> {
  await sql`create table if not exists ${sql.table(TOTP_CLAIMS_TABLE)} (
    key text primary key,
    expires_at bigint not null
  )`.execute(db);
}

const digest = (text: string) => createHash("sha256").update(text).digest("hex");

/**
 * Claims `code` for `userId` until `now + CLAIM_TTL_MS`: true for the first request, false while
 * an earlier claim of the same code is live (one statement: concurrent requests cannot both win).
 */
export async function claimTotpCode(db: Kysely<any>, userId: string, code: string, now = Date.now()): Promise<boolean> {
  const table = sql.table(TOTP_CLAIMS_TABLE);
  const key = digest(`${userId}:${code}`);
  const { rows } = await sql<{ key: string }>`
    insert into ${table} as t (key, expires_at) values (${key}, ${now + CLAIM_TTL_MS})
    on conflict (key) do update set expires_at = excluded.expires_at where t.expires_at <= ${now}
    returning key`.execute(db);
  await sql`delete from ${table} where expires_at <= ${now}`.execute(db);
  return rows.length === 1;
}

/** Gives back a claim whose code was not accepted (a typo must not block the right code later). */
export async function releaseTotpCode(db: Kysely<any>, userId: string, code: string): Promise<void> {
  await sql`delete from ${sql.table(TOTP_CLAIMS_TABLE)} where key = ${digest(`${userId}:${code}`)}`.execute(db);
}

export const secondFactorKey = (userId: string) => "2fa:" + digest(userId);

type HookContext = Parameters<Parameters<typeof createAuthMiddleware>[0]>[0];

/** The user of the request's session (cookie or bearer), through the Better Auth instance. */
export type SessionUser = (headers: Headers) => Promise<string | null>;

/** Whose code this is: the signed-in user (confirming a new set-up) or the sign-in's challenge cookie. */
async function codeOwner(ctx: HookContext, sessionUser: SessionUser): Promise<string | null> {
  // Other plugins' before hooks (the bearer's) reach the route only after every hook ran:
  // the session is resolved through the instance, which runs them.
  const headers = ctx.headers ?? ctx.request?.headers;
  const signedIn = headers ? await sessionUser(headers).catch(() => null) : null;
  if (signedIn) return signedIn;
  const cookie = ctx.context.createAuthCookie(TWO_FACTOR_COOKIE);
  const identifier = await ctx.getSignedCookie(cookie.name, ctx.context.secret);
  if (!identifier) return null;
  const challenge = await ctx.context.internalAdapter.findVerificationValue(identifier);
  return challenge && challenge.expiresAt > new Date() ? challenge.value : null;
}

function throttled(wait: number): APIError {
  return new APIError(
    "TOO_MANY_REQUESTS",
    { code: "TWO_FACTOR_THROTTLED", message: "Too many wrong codes for this account. Please try again later." },
    { "Retry-After": String(wait), "X-Retry-After": String(wait) },
  );
}

/** Replay refusal and per-account throttling around the plugin's verification routes. */
export function secondFactorGuard(db: Kysely<any>, store: AccountThrottleStore, policy: AccountThrottlePolicy, sessionUser: SessionUser): BetterAuthPlugin {
  const windowMs = policy.windowSeconds * 1000;
  const ttlMs = (policy.windowSeconds + policy.maxSeconds) * 1000;
  // What the before hook learned, for the after hook of the same request.
  const pending = new WeakMap<object, { userId: string; claimed?: string }>();
  const recordFailure = (key: string) => failOpen("two-factor throttle", () => store.recordFailure(key, Date.now(), windowMs, ttlMs), null);
  const matcher = (ctx: { path?: string }) => VERIFY_PATHS.has(ctx.path ?? "");
  return {
    id: "second-factor-guard",
    hooks: {
      before: [
        {
          matcher,
          handler: createAuthMiddleware(async (ctx) => {
            const userId = await codeOwner(ctx, sessionUser);
            if (!userId) return; // the plugin answers INVALID_TWO_FACTOR_COOKIE / 401
            const key = secondFactorKey(userId);
            const wait = lockSeconds(await failOpen("two-factor throttle", () => store.get(key), null), policy, Date.now());
            if (wait > 0) throw throttled(wait);
            const code = (ctx.body as { code?: unknown } | undefined)?.code;
            if (ctx.path === VERIFY_TOTP && typeof code === "string") {
              if (!(await claimTotpCode(db, userId, code))) {
                await recordFailure(key);
                throw new APIError("UNAUTHORIZED", { code: "CODE_ALREADY_USED", message: "This code was already used: wait for the next one." });
              }
              pending.set(ctx.context, { userId, claimed: code });
              return;
            }
            pending.set(ctx.context, { userId });
          }),
        },
      ],
      after: [
        {
          matcher,
          handler: createAuthMiddleware(async (ctx) => {
            const seen = pending.get(ctx.context);
            if (!seen) return;
            const returned = ctx.context.returned;
            const failed = isAPIError(returned) || (returned instanceof Response && !returned.ok);
            if (!failed) {
              await failOpen("two-factor throttle", () => store.clear(secondFactorKey(seen.userId)), undefined);
              return;
            }
            if (seen.claimed) await releaseTotpCode(db, seen.userId, seen.claimed);
            if (isAPIError(returned) && returned.statusCode === 401) await recordFailure(secondFactorKey(seen.userId));
          }),
        },
      ],
    },
  };
}
