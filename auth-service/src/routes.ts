// Seed-contract routes (/auth/*) built on Better Auth: every one is forwarded through
// `auth.handler` to a Better Auth route, so the rate limiter, hooks and validation apply exactly
// as on /api/auth/*. Cookie requests to the state-changing routes must come from a trusted origin.
import { Hono, type Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { decodeJwt } from "jose";
import { SOLE_OWNER_CODE, SOLE_OWNER_MESSAGE } from "./account-deletion.js";
import { API_KEY_HEADER, apiKeyRoutes, INVALID_API_KEY } from "./api-keys.js";
import type { Auth } from "./auth.js";
import { errorBody } from "./errors.js";
import { forwardToAuth } from "./http.js";
import { isTwoFactorChallenge, twoFactorLoginRoutes, twoFactorRequired } from "./two-factor-routes.js";
import { EMAIL_MAX, hasControlChars, nameProblem, PASSWORD_MAX, passwordProblem } from "./input-policy.js";

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

export { errorBody };

function fail(c: Context, status: number, code: string, message: string, headers?: Record<string, string>) {
  return c.json(errorBody(code, message), status as ContentfulStatusCode, headers);
}

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

type Validated<T> = { ok: true; value: T } | { ok: false; message: string };

function validateCredentials(body: unknown, kind: "signup" | "login"): Validated<{ email: string; password: string; full_name?: string }> {
  if (!body || typeof body !== "object" || Array.isArray(body)) return { ok: false, message: "body must be a JSON object" };
  const { email, password, full_name } = body as Record<string, unknown>;
  if (typeof email !== "string" || email.length > EMAIL_MAX || !EMAIL_RE.test(email) || hasControlChars(email)) {
    return { ok: false, message: "email must be a valid email address" };
  }
  if (kind === "login") {
    // Accounts made under an older policy still sign in: only the upper bound applies here.
    if (typeof password !== "string" || password.length < 1 || password.length > PASSWORD_MAX || hasControlChars(password)) {
      return { ok: false, message: `password must be a string of 1 to ${PASSWORD_MAX} characters` };
    }
    return { ok: true, value: { email, password } };
  }
  const problem = passwordProblem(password) ?? (hasControlChars(password as string) ? "password must not contain control characters" : null);
  if (problem) return { ok: false, message: problem };
  const nameIssue = nameProblem(full_name) ?? (hasControlChars(full_name as string) ? "full_name must not contain control characters" : null);
  if (nameIssue) return { ok: false, message: nameIssue.replace(/^name/, "full_name") };
  return { ok: true, value: { email, password: password as string, full_name: (full_name as string).trim() } };
}

async function readJson(c: Context): Promise<unknown | typeof INVALID> {
  try {
    return await c.req.json();
  } catch {
    return INVALID;
  }
}
const INVALID = Symbol("invalid-json");

/** Turns a Better Auth error response into the service's `{error: {code, message, request_id}}` shape. */
async function mapAuthError(c: Context, res: Response, unauthorized: { code: string; message: string }) {
  let data: { code?: string; message?: string } = {};
  try {
    data = await res.json();
  } catch {}
  const code = data.code ?? "";
  if (res.status === 429) {
    const retry = res.headers.get("retry-after") ?? res.headers.get("x-retry-after") ?? "60";
    return fail(c, 429, "rate_limited", "Too many requests. Please try again later.", { "Retry-After": retry });
  }
  if (code.startsWith("USER_ALREADY_EXISTS")) return fail(c, 409, "email_taken", "an account with this email already exists");
  if (code === "EMAIL_NOT_VERIFIED") {
    return fail(c, 403, "email_not_verified", "this email address is not verified yet: follow the link in the verification mail (a new one is on its way)");
  }
  if (res.status === 400 || res.status === 422) return fail(c, 422, "validation_error", data.message ?? "invalid input");
  if (res.status === 401) return fail(c, 401, unauthorized.code, unauthorized.message);
  if (res.status === 403) return fail(c, 403, "forbidden", data.message ?? "forbidden");
  return fail(c, 500, "internal_error", "internal server error");
}

/** POST /auth/signup with EMAIL_VERIFICATION=required, for a new and a registered address alike. */
export const VERIFICATION_SENT = {
  verification_required: true,
  message: "check your inbox: follow the link in the mail we sent to this address to continue",
} as const;

const NO_SESSION = { code: "unauthorized", message: "a valid session token or cookie is required" };

function bearerToken(c: Context): string | undefined {
  return c.req.header("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim() || undefined;
}

export function contractRoutes(auth: Auth, opts: { trustProxies: boolean }) {
  const r = new Hono();
  const forward = (c: Context, request: Parameters<typeof forwardToAuth>[3]) => forwardToAuth(auth, c, opts.trustProxies, request);

  /**
   * Which credential a session route uses: a bearer token always (a browser cannot attach one
   * cross-site); a cookie only from a trusted Origin (or Referer) — Better Auth's own origin
   * check, since a cross-site form or fetch carries the cookie too (CSRF).
   */
  async function sessionCredential(c: Context): Promise<"authorization" | "cookie" | Response> {
    if (bearerToken(c)) return "authorization";
    if (!c.req.header("cookie")) return fail(c, 401, NO_SESSION.code, NO_SESSION.message);
    const origin = c.req.header("origin") || c.req.header("referer");
    if (!origin || origin === "null") return fail(c, 403, "invalid_origin", "a cookie request needs an Origin header from a trusted origin");
    if (!(await auth.$context).isTrustedOrigin(origin)) return fail(c, 403, "invalid_origin", "this origin is not trusted");
    return "cookie";
  }

  function accessToken(token: string) {
    const { exp = 0, iat = 0 } = decodeJwt(token);
    return { access_token: token, token_type: "bearer" as const, expires_in: exp - iat };
  }

  /** Mints an access JWT for the request's session through Better Auth's jwt plugin (/api/auth/token). */
  async function mint(c: Context, carry: "authorization" | "cookie") {
    const res = await forward(c, { method: "GET", path: "/token", carry });
    if (!res.ok) return mapAuthError(c, res, NO_SESSION);
    return c.json(accessToken(((await res.json()) as { token: string }).token));
  }

  async function credentialsRoute(c: Context, kind: "signup" | "login") {
    const body = await readJson(c);
    if (body === INVALID) return fail(c, 400, "invalid_json", "request body must be valid JSON");
    const v = validateCredentials(body, kind);
    if (!v.ok) return fail(c, 422, "validation_error", v.message);
    const { email, password, full_name } = v.value;
    const res = await forward(c, {
      method: "POST",
      path: kind === "signup" ? "/sign-up/email" : "/sign-in/email",
      body: kind === "signup" ? { email, password, name: full_name } : { email, password },
    });
    // Same answer for an unknown email and a wrong password.
    if (!res.ok) return mapAuthError(c, res, { code: "invalid_credentials", message: "invalid email or password" });
    const data = (await res.clone().json()) as unknown;
    // A second factor is due: no session exists yet (src/two-factor-routes.ts).
    if (kind === "login" && isTwoFactorChallenge(data)) return twoFactorRequired(c, auth, res, data.twoFactorMethods, fail);
    // EMAIL_VERIFICATION=required: sign-up opens no session, and answers the same whether the
    // address was free (a verification mail) or taken (its owner is told): no enumeration.
    if (kind === "signup" && !res.headers.get("set-auth-token")) return c.json(VERIFICATION_SENT, 202);
    return sessionAnswer(c, res, kind === "signup" ? 201 : 200);
  }

  /** A Better Auth answer that opened a session ({user} + set-auth-token) -> tokens and the user. */
  async function sessionAnswer(c: Context, res: Response, status: 200 | 201 = 200) {
    const data = (await res.json()) as { user: BAUser };
    // The signed session token (`<token>.<hmac>`), the only form the bearer plugin accepts.
    const sessionToken = res.headers.get("set-auth-token") ?? "";
    // The sign-in itself went through the limiter: mint in-process for the new session.
    const { token } = await auth.api.getToken({ headers: new Headers({ authorization: `Bearer ${sessionToken}` }) });
    return c.json({ ...accessToken(token), session_token: sessionToken, user: toPublicUser(data.user) }, status);
  }

  r.post("/signup", (c) => credentialsRoute(c, "signup"));
  r.post("/login", (c) => credentialsRoute(c, "login"));
  r.route("/login/two-factor", twoFactorLoginRoutes(auth, { forward, fail, mapAuthError, sessionAnswer }));

  /**
   * Bearer session token (or session cookie from a trusted origin) -> a fresh access JWT with
   * full scope; or an API key in `x-api-key` -> a JWT with the key's `scope`.
   */
  r.post("/token", async (c) => {
    if (c.req.header(API_KEY_HEADER) !== undefined) {
      const res = await forward(c, { method: "POST", path: "/api-key/token", carry: API_KEY_HEADER });
      if (!res.ok) return mapAuthError(c, res, INVALID_API_KEY);
      return c.json(accessToken(((await res.json()) as { token: string }).token));
    }
    const carry = await sessionCredential(c);
    if (carry instanceof Response) return carry;
    return mint(c, carry);
  });

  /** Accepts a session token / cookie, or an access JWT issued by this service (while its session lasts). */
  r.get("/me", async (c) => {
    const token = bearerToken(c);
    if (token && token.split(".").length === 3) {
      const res = await forward(c, { method: "GET", path: "/access-token/user", carry: "authorization" });
      if (!res.ok) return mapAuthError(c, res, { code: "invalid_token", message: "the access token is invalid, expired or its session has ended" });
      return c.json(toPublicUser(((await res.json()) as { user: BAUser }).user));
    }
    const res = await forward(c, { method: "GET", path: "/get-session", carry: token ? "authorization" : "cookie" });
    if (!res.ok) return mapAuthError(c, res, NO_SESSION);
    const session = (await res.json()) as { user: BAUser } | null;
    if (!session) return fail(c, 401, "unauthorized", "a valid session token, cookie or access token is required");
    return c.json(toPublicUser(session.user));
  });

  /** Revokes the current session: it can no longer mint access tokens, and its access JWTs stop at /auth/me. */
  r.post("/logout", async (c) => {
    const carry = await sessionCredential(c);
    if (carry instanceof Response) return carry;
    const current = await forward(c, { method: "GET", path: "/get-session", carry });
    if (!current.ok) return mapAuthError(c, current, NO_SESSION);
    if (!(await current.json())) return fail(c, 401, NO_SESSION.code, NO_SESSION.message);
    const res = await forward(c, { method: "POST", path: "/sign-out", carry });
    if (!res.ok) return mapAuthError(c, res, NO_SESSION);
    return c.json({ success: true });
  });

  /**
   * Deletes the signed-in user's account (Better Auth's /delete-user), confirmed by the password:
   * the account, its sessions, API keys and memberships go, with the organizations it was the
   * only member of; the rag-service erases the rest from the account events (src/account-events.ts).
   * A sole owner of an organization with other members gets 409 sole_owner.
   */
  r.delete("/me", async (c) => {
    const carry = await sessionCredential(c);
    if (carry instanceof Response) return carry;
    const body = await readJson(c);
    if (body === INVALID) return fail(c, 400, "invalid_json", "request body must be valid JSON");
    const password = (body as { password?: unknown } | null)?.password;
    if (typeof password !== "string" || password.length < 1 || password.length > PASSWORD_MAX || hasControlChars(password)) {
      return fail(c, 422, "validation_error", `password must be a string of 1 to ${PASSWORD_MAX} characters`);
    }
    const res = await forward(c, { method: "POST", path: "/delete-user", carry, body: { password } });
    if (res.ok) return c.json({ success: true });
    const data = (await res.clone().json().catch(() => ({}))) as { code?: string; message?: string };
    if (data.code === "INVALID_PASSWORD") return fail(c, 403, "invalid_password", "the password is wrong");
    if (data.code === "CREDENTIAL_ACCOUNT_NOT_FOUND") return fail(c, 403, "invalid_password", "this account has no password to confirm with");
    if (data.code === SOLE_OWNER_CODE) return fail(c, 409, "sole_owner", data.message ?? SOLE_OWNER_MESSAGE);
    return mapAuthError(c, res, NO_SESSION);
  });

  r.route("/api-keys", apiKeyRoutes(auth, { sessionCredential, forward, fail, mapAuthError, noSession: NO_SESSION }));

  return r;
}
