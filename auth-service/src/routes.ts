// Seed-contract routes (/auth/*) built on Better Auth: sign-up and sign-in are forwarded through
// `auth.handler` (so Better Auth's rate limiter, hooks and validation apply exactly as on
// /api/auth/*); the rest call the server API `auth.api.*`.
import { Hono, type Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { isAPIError } from "better-auth/api";
import { decodeJwt } from "jose";
import { NAME_MAX, NAME_MIN, PASSWORD_MAX, PASSWORD_MIN, type Auth } from "./auth.js";
import { forwardToAuth } from "./http.js";

interface BAUser {
  id: string;
  email: string;
  name: string;
  createdAt: string | Date;
}

export interface PublicUser {
  id: string;
  email: string;
  full_name: string;
  created_at: string;
}

export function toPublicUser(u: BAUser): PublicUser {
  return { id: u.id, email: u.email, full_name: u.name, created_at: new Date(u.createdAt).toISOString() };
}

export function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

function fail(c: Context, status: number, code: string, message: string, headers?: Record<string, string>) {
  return c.json(errorBody(code, message), status as ContentfulStatusCode, headers);
}

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

type Validated<T> = { ok: true; value: T } | { ok: false; message: string };

function validateCredentials(body: unknown, withName: boolean): Validated<{ email: string; password: string; full_name?: string }> {
  if (!body || typeof body !== "object" || Array.isArray(body)) return { ok: false, message: "body must be a JSON object" };
  const { email, password, full_name } = body as Record<string, unknown>;
  if (typeof email !== "string" || email.length > 254 || !EMAIL_RE.test(email)) return { ok: false, message: "email must be a valid email address" };
  if (typeof password !== "string" || password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) {
    // For login an out-of-range password simply cannot match: still report it as invalid input.
    return { ok: false, message: `password must be a string of ${PASSWORD_MIN} to ${PASSWORD_MAX} characters` };
  }
  if (!withName) return { ok: true, value: { email, password } };
  const name = typeof full_name === "string" ? full_name.trim() : "";
  if (typeof full_name !== "string" || name.length < NAME_MIN || name.length > NAME_MAX) {
    return { ok: false, message: `full_name must be a string of ${NAME_MIN} to ${NAME_MAX} characters` };
  }
  return { ok: true, value: { email, password, full_name: name } };
}

async function readJson(c: Context): Promise<unknown | typeof INVALID> {
  try {
    return await c.req.json();
  } catch {
    return INVALID;
  }
}
const INVALID = Symbol("invalid-json");

/** Turns a Better Auth error response into our `{error: {code, message}}` shape. */
async function mapAuthError(c: Context, res: Response, overrides: Record<number, { status: number; code: string; message?: string }> = {}) {
  let data: { code?: string; message?: string } = {};
  try {
    data = await res.json();
  } catch {}
  if (res.status === 429) {
    const retry = res.headers.get("retry-after") ?? res.headers.get("x-retry-after") ?? "60";
    return fail(c, 429, "rate_limited", "Too many requests. Please try again later.", { "Retry-After": retry });
  }
  const o = overrides[res.status];
  if (o) return fail(c, o.status, o.code, o.message ?? data.message ?? o.code);
  const code = (data.code ?? "auth_error").toLowerCase();
  const status = res.status >= 400 && res.status < 600 ? res.status : 500;
  return fail(c, status, code, data.message ?? "Authentication error");
}

export function contractRoutes(auth: Auth, opts: { trustProxies: boolean }) {
  const r = new Hono();

  /** Mints an access JWT for the session in `headers` (bearer token or cookie): Better Auth's jwt plugin. */
  async function mint(headers: Headers) {
    const { token } = await auth.api.getToken({ headers });
    const { exp = 0, iat = 0 } = decodeJwt(token);
    return { access_token: token, token_type: "bearer" as const, expires_in: exp - iat };
  }

  async function credentialsRoute(c: Context, kind: "signup" | "login") {
    const body = await readJson(c);
    if (body === INVALID) return fail(c, 400, "invalid_json", "request body must be valid JSON");
    const v = validateCredentials(body, kind === "signup");
    if (!v.ok) return fail(c, 422, "validation_error", v.message);
    const { email, password, full_name } = v.value;
    const res = await forwardToAuth(
      auth,
      c,
      opts.trustProxies,
      kind === "signup" ? "/sign-up/email" : "/sign-in/email",
      kind === "signup" ? { email, password, name: full_name } : { email, password },
    );
    if (!res.ok) {
      return mapAuthError(c, res, {
        // Better Auth answers 422 USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL: the contract says 409.
        422: { status: 409, code: "email_taken", message: "an account with this email already exists" },
        // Same answer for an unknown email and a wrong password.
        401: { status: 401, code: "invalid_credentials", message: "invalid email or password" },
        400: { status: 422, code: "validation_error" },
      });
    }
    const data = (await res.json()) as { token: string; user: BAUser };
    const sessionToken = res.headers.get("set-auth-token") ?? data.token;
    const tokens = await mint(new Headers({ authorization: `Bearer ${sessionToken}` }));
    return c.json({ ...tokens, session_token: sessionToken, user: toPublicUser(data.user) }, kind === "signup" ? 201 : 200);
  }

  r.post("/signup", (c) => credentialsRoute(c, "signup"));
  r.post("/login", (c) => credentialsRoute(c, "login"));

  /** Bearer session token (or session cookie) -> a fresh access JWT. */
  r.post("/token", async (c) => {
    try {
      return c.json(await mint(c.req.raw.headers));
    } catch (err) {
      if (isAPIError(err) && err.statusCode === 401) return fail(c, 401, "unauthorized", "a valid session token or cookie is required");
      throw err;
    }
  });

  /** Accepts a session token / cookie, or an access JWT issued by this service. */
  r.get("/me", async (c) => {
    const bearerToken = c.req.header("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
    if (bearerToken && bearerToken.split(".").length === 3) {
      const { payload } = await auth.api.verifyJWT({ body: { token: bearerToken } });
      if (!payload?.sub) return fail(c, 401, "invalid_token", "the access token is invalid or expired");
      const ctx = await auth.$context;
      const user = await ctx.internalAdapter.findUserById(payload.sub);
      if (!user) return fail(c, 401, "invalid_token", "the token's user no longer exists");
      return c.json(toPublicUser(user));
    }
    const session = await auth.api.getSession({ headers: c.req.raw.headers });
    if (!session) return fail(c, 401, "unauthorized", "a valid session token, cookie or access token is required");
    return c.json(toPublicUser(session.user));
  });

  /** Revokes the current session: it can no longer mint access tokens. */
  r.post("/logout", async (c) => {
    const session = await auth.api.getSession({ headers: c.req.raw.headers });
    if (!session) return fail(c, 401, "unauthorized", "a valid session token or cookie is required");
    await auth.api.signOut({ headers: c.req.raw.headers });
    return c.json({ success: true });
  });

  return r;
}
