// API keys for scripts and other API clients (Better Auth's API-key plugin): a signed-in user
// creates, lists and revokes named keys with a scope (`read` | `write`) and an optional expiry;
// a key is exchanged at POST /auth/token (`x-api-key`) for a short-lived access JWT carrying
// `scope`, which the rag-service enforces. Keys are stored as SHA-256 hashes, shown once, and
// every exchange counts against the key's own rate limit.
import { apiKey } from "@better-auth/api-key";
import type { BetterAuthPlugin } from "better-auth";
import { APIError, createAuthEndpoint, isAPIError } from "better-auth/api";
import { signJWT } from "better-auth/plugins";
import { Hono, type Context } from "hono";
import type { Auth } from "./auth.js";
import type { Config } from "./config.js";
import { issuedAt, type AccountEventLog } from "./account-events.js";
import { orgsPayload, type MemberStore } from "./organizations.js";

export const SCOPES = ["read", "write"] as const;
export type Scope = (typeof SCOPES)[number];
/** Better Auth stores permissions as `{resource: [actions]}`: ours live under one resource. */
const PERMISSION_RESOURCE = "rag";
export const API_KEY_HEADER = "x-api-key";
export const KEY_PREFIX = "rag_";
const NAME_MAX = 64;
const DAY_SECONDS = 86_400;
const MAX_EXPIRY_DAYS = 365;

/** The Better Auth plugin. `enableSessionForAPIKeys` stays off: a key must never act as a full session. */
export function apiKeyPlugin(config: Config) {
  return apiKey({
    defaultPrefix: KEY_PREFIX,
    requireName: true,
    maximumNameLength: NAME_MAX,
    // Keys made through Better Auth's own /api/auth/api-key/create (where a client may not set
    // permissions) are read-only; /auth/api-keys sets the scope asked for.
    permissions: { defaultPermissions: { [PERMISSION_RESOURCE]: ["read"] } },
    keyExpiration: { defaultExpiresIn: null, minExpiresIn: 1, maxExpiresIn: MAX_EXPIRY_DAYS },
    rateLimit: { enabled: true, timeWindow: config.apiKeys.rateLimitWindow * 1000, maxRequests: config.apiKeys.rateLimitMax },
    enableSessionForAPIKeys: false,
  });
}

export function scopeOf(permissions: unknown): Scope {
  const actions = (permissions as Record<string, unknown> | null)?.[PERMISSION_RESOURCE];
  return Array.isArray(actions) && actions.includes("write") ? "write" : "read";
}

interface StoredKey {
  id: string;
  name: string | null;
  start: string | null;
  permissions: unknown;
  expiresAt: string | Date | null;
  createdAt: string | Date;
  lastRequest: string | Date | null;
}

const iso = (d: string | Date | null) => (d ? new Date(d).toISOString() : null);

export function publicKey(k: StoredKey) {
  return {
    id: k.id,
    name: k.name,
    scope: scopeOf(k.permissions),
    start: k.start,
    expires_at: iso(k.expiresAt),
    created_at: iso(k.createdAt),
    last_used_at: iso(k.lastRequest),
  };
}

type CreateInput = { name: string; scope: Scope; expiresIn?: number };

export function validateCreate(body: unknown): { ok: true; value: CreateInput } | { ok: false; message: string } {
  if (!body || typeof body !== "object" || Array.isArray(body)) return { ok: false, message: "body must be a JSON object" };
  const { name, scope, expires_in_days } = body as Record<string, unknown>;
  if (typeof name !== "string" || !name.trim() || name.trim().length > NAME_MAX || /[\u0000-\u001f\u007f]/.test(name)) {
    return { ok: false, message: `name must be 1 to ${NAME_MAX} printable characters` };
  }
  if (scope === undefined || !SCOPES.includes(scope as Scope)) return { ok: false, message: `scope must be one of: ${SCOPES.join(", ")}` };
  if (expires_in_days !== undefined && expires_in_days !== null) {
    if (typeof expires_in_days !== "number" || !Number.isInteger(expires_in_days) || expires_in_days < 1 || expires_in_days > MAX_EXPIRY_DAYS) {
      return { ok: false, message: `expires_in_days must be an integer from 1 to ${MAX_EXPIRY_DAYS}, or null for no expiry` };
    }
    return { ok: true, value: { name: name.trim(), scope: scope as Scope, expiresIn: expires_in_days * DAY_SECONDS } };
  }
  return { ok: true, value: { name: name.trim(), scope: scope as Scope } };
}

type Fail = (c: Context, status: number, code: string, message: string, headers?: Record<string, string>) => Response;

type JwtOptions = Parameters<typeof signJWT>[1]["options"];

/** How POST /auth/token answers any refused key (unknown, revoked, expired, malformed). */
export const INVALID_API_KEY = { code: "invalid_api_key", message: "the API key is invalid, revoked or expired" };

interface VerifyResult {
  valid: boolean;
  error: { code?: string; details?: { tryAgainIn?: number } } | null;
  key: (StoredKey & { referenceId: string }) | null;
}

/**
 * POST /api/auth/api-key/token (`x-api-key`): the key -> access JWT exchange, a Better Auth
 * endpoint so POST /auth/token reaches it through the handler (per-IP limiter, hooks) like every
 * contract route. Verification is the plugin's own (`verifyApiKey`: hash lookup, `enabled`,
 * `expiresAt`, the key's rate limit, usage counted); `auth()` is the instance, bound late because
 * this plugin is part of it. The JWT is `{sub, scope, iat, exp, iss, aud}` plus the owner's `orgs`:
 * no `sid`, since the key, not a session, is what gets revoked.
 */
export function apiKeyExchange(auth: () => Auth, jwtOptions: JwtOptions, events: AccountEventLog): BetterAuthPlugin {
  return {
    id: "api-key-exchange",
    endpoints: {
      exchangeApiKey: createAuthEndpoint("/api-key/token", { method: "POST", requireHeaders: true }, async (ctx) => {
        const key = ctx.headers?.get(API_KEY_HEADER)?.trim() ?? "";
        if (!key || key.length > 256) throw invalidKey();
        const result = (await auth().api.verifyApiKey({ body: { key } })) as VerifyResult;
        if (!result.valid || !result.key) {
          if (result.error?.code === "RATE_LIMITED") {
            const seconds = Math.max(1, Math.ceil((result.error.details?.tryAgainIn ?? 60_000) / 1000));
            throw new APIError("TOO_MANY_REQUESTS", { code: "API_KEY_RATE_LIMITED", message: "rate limit exceeded" }, { "Retry-After": String(seconds) });
          }
          throw invalidKey();
        }
        const userId = result.key.referenceId;
        // The owner's memberships now, as in a session's token; `scope` still caps what they allow.
        // `iat` as in a session's token (src/account-events.ts issuedAt).
        const startedAt = Date.now();
        const iat = issuedAt(startedAt, await events.latestMembershipChange(userId));
        const orgs = await orgsPayload(ctx.context.adapter as MemberStore, userId);
        const payload = { sub: userId, scope: scopeOf(result.key.permissions), iat, ...orgs };
        return ctx.json({ token: await signJWT(ctx, { options: jwtOptions, payload }) });
      }),
    },
  };
}

function invalidKey(): APIError {
  return new APIError("UNAUTHORIZED", { code: "INVALID_API_KEY", message: "the API key is invalid, revoked or expired" });
}

type SessionCredential = (c: Context) => Promise<"authorization" | "cookie" | Response>;
type Forward = (c: Context, request: { method: "GET" | "POST"; path: string; body?: unknown; carry?: "authorization" | "cookie" | "x-api-key" }) => Promise<Response>;
type MapError = (c: Context, res: Response, unauthorized: { code: string; message: string }) => Promise<Response>;

/** /auth/api-keys: create (POST), list (GET), revoke (DELETE /:id), for the signed-in user. */
export function apiKeyRoutes(auth: Auth, h: { sessionCredential: SessionCredential; forward: Forward; fail: Fail; mapAuthError: MapError; noSession: { code: string; message: string } }) {
  const r = new Hono();

  r.post("/", async (c) => {
    const carry = await h.sessionCredential(c);
    if (carry instanceof Response) return carry;
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return h.fail(c, 400, "invalid_json", "request body must be valid JSON");
    }
    const v = validateCreate(body);
    if (!v.ok) return h.fail(c, 422, "validation_error", v.message);
    // The session is resolved through the handler (rate limiter, hooks); the key is then made
    // server-side, the only way the plugin lets permissions be set.
    const session = await h.forward(c, { method: "GET", path: "/get-session", carry });
    if (!session.ok) return h.mapAuthError(c, session, h.noSession);
    const userId = ((await session.json()) as { user?: { id: string } } | null)?.user?.id;
    if (!userId) return h.fail(c, 401, h.noSession.code, h.noSession.message);
    try {
      const created = (await auth.api.createApiKey({
        body: { userId, name: v.value.name, expiresIn: v.value.expiresIn, permissions: { [PERMISSION_RESOURCE]: [v.value.scope] } },
      })) as StoredKey & { key: string };
      // The only time the key itself is ever returned.
      return c.json({ ...publicKey(created), key: created.key }, 201);
    } catch (err) {
      if (isAPIError(err) && err.statusCode < 500) return h.fail(c, 422, "validation_error", err.body?.message ?? "invalid API key request");
      throw err;
    }
  });

  r.get("/", async (c) => {
    const carry = await h.sessionCredential(c);
    if (carry instanceof Response) return carry;
    const res = await h.forward(c, { method: "GET", path: "/api-key/list", carry });
    if (!res.ok) return h.mapAuthError(c, res, h.noSession);
    const { apiKeys } = (await res.json()) as { apiKeys: StoredKey[] };
    const keys = apiKeys.map(publicKey).sort((a, b) => (b.created_at ?? "").localeCompare(a.created_at ?? ""));
    return c.json({ keys });
  });

  r.delete("/:id", async (c) => {
    const carry = await h.sessionCredential(c);
    if (carry instanceof Response) return carry;
    const res = await h.forward(c, { method: "POST", path: "/api-key/delete", carry, body: { keyId: c.req.param("id") } });
    // Someone else's key and a missing one look the same.
    if (res.status === 404 || res.status === 403) return h.fail(c, 404, "not_found", "no such API key");
    if (!res.ok) return h.mapAuthError(c, res, h.noSession);
    return c.json({ success: true });
  });

  return r;
}
