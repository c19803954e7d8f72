// The seed contract's side of two-factor sign-in. POST /auth/login for an account with
// two-factor codes answers 401 `two_factor_required` with a challenge token (Better Auth's
// signed `two_factor` challenge cookie, handed to clients that keep no cookies) and never a
// session or an access token; POST /auth/login/two-factor with that token and a code (or a
// backup code) finishes the sign-in through the plugin's own verification route, and answers
// like /auth/login.
import { Hono, type Context } from "hono";
import type { Auth } from "./auth.js";
import { errorBody } from "./errors.js";
import { TWO_FACTOR_CHALLENGE_SECONDS, TWO_FACTOR_COOKIE } from "./two-factor.js";

type Fail = (c: Context, status: number, code: string, message: string, headers?: Record<string, string>) => Response;
type Forward = (c: Context, request: { method: "POST"; path: string; body?: unknown; cookie?: string }) => Promise<Response>;
type MapError = (c: Context, res: Response, unauthorized: { code: string; message: string }) => Promise<Response>;
type SessionAnswer = (c: Context, res: Response) => Promise<Response>;

/** What Better Auth's sign-in answers (200) when the account has a second factor. */
export function isTwoFactorChallenge(data: unknown): data is { twoFactorRedirect: true; twoFactorMethods?: string[] } {
  return !!data && typeof data === "object" && (data as { twoFactorRedirect?: unknown }).twoFactorRedirect === true;
}

async function challengeCookieName(auth: Auth): Promise<string> {
  return (await auth.$context).createAuthCookie(TWO_FACTOR_COOKIE).name;
}

// A signed cookie value as Better Auth writes it (URL-encoded "<identifier>.<signature>"): no
// separators, so the token can never smuggle another cookie in.
const TOKEN_RE = /^[A-Za-z0-9%._~-]{16,512}$/;
const TOTP_RE = /^\d{6}$/;
const BACKUP_CODE_RE = /^[A-Za-z0-9-]{1,64}$/;

/** 401 two_factor_required, with the challenge token from the sign-in's Set-Cookie. */
export async function twoFactorRequired(c: Context, auth: Auth, res: Response, methods: string[] | undefined, fail: Fail) {
  const name = await challengeCookieName(auth);
  const cookie = res.headers.getSetCookie().find((line) => line.startsWith(`${name}=`));
  const token = cookie?.slice(name.length + 1).split(";")[0];
  if (!token) return fail(c, 500, "internal_error", "internal server error");
  return c.json(
    {
      ...errorBody("two_factor_required", "this account has two-factor codes: send a code from the authenticator app (or a backup code) to POST /auth/login/two-factor"),
      two_factor: { token, methods: [...(methods ?? []), "backup_code"], expires_in: TWO_FACTOR_CHALLENGE_SECONDS },
    },
    401,
  );
}

const INVALID_CODE = { code: "invalid_code", message: "the code is wrong, expired or was already used" };

export function twoFactorLoginRoutes(auth: Auth, h: { forward: Forward; fail: Fail; mapAuthError: MapError; sessionAnswer: SessionAnswer }) {
  const r = new Hono();

  r.post("/", async (c) => {
    let body: unknown;
    try {
      body = await c.req.json();
    } catch {
      return h.fail(c, 400, "invalid_json", "request body must be valid JSON");
    }
    const { two_factor_token: token, code, backup_code: backupCode } = (body ?? {}) as Record<string, unknown>;
    if (typeof token !== "string" || !TOKEN_RE.test(token)) return h.fail(c, 422, "validation_error", "two_factor_token must be the token POST /auth/login returned");
    if ((code === undefined) === (backupCode === undefined)) return h.fail(c, 422, "validation_error", "send either code (6 digits) or backup_code");
    if (code !== undefined && (typeof code !== "string" || !TOTP_RE.test(code))) return h.fail(c, 422, "validation_error", "code must be the 6 digits the authenticator app shows");
    if (backupCode !== undefined && (typeof backupCode !== "string" || !BACKUP_CODE_RE.test(backupCode))) {
      return h.fail(c, 422, "validation_error", "backup_code must be one of the backup codes given when two-factor sign-in was enabled");
    }
    const res = await h.forward(c, {
      method: "POST",
      path: code !== undefined ? "/two-factor/verify-totp" : "/two-factor/verify-backup-code",
      body: { code: code ?? backupCode },
      cookie: `${await challengeCookieName(auth)}=${token}`,
    });
    if (res.ok) return h.sessionAnswer(c, res);
    const data = (await res.clone().json().catch(() => ({}))) as { code?: string };
    if (data.code === "INVALID_TWO_FACTOR_COOKIE" || data.code === "TOO_MANY_ATTEMPTS_REQUEST_NEW_CODE") {
      return h.fail(c, 401, "two_factor_expired", "this sign-in attempt is over (expired, finished or too many wrong codes): sign in again with POST /auth/login");
    }
    // 409: a concurrent request spent the same backup code first (the plugin's compare-and-set).
    if (res.status === 409) return h.fail(c, 401, INVALID_CODE.code, INVALID_CODE.message);
    return h.mapAuthError(c, res, INVALID_CODE);
  });

  return r;
}
