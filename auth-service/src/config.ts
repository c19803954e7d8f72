// Environment -> typed configuration. Read once at start-up (server.ts) and passed down.
import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseSsoProviders, SsoConfigError, type SsoProvider } from "./sso-config.js";

export type AuthEnv = "development" | "test" | "production";

export interface Config {
  env: AuthEnv;
  /** development/test: a generated secret is allowed; production: it must be given. */
  devMode: boolean;
  port: number;
  host: string;
  /** Unset -> embedded PGlite in `${dataDir}/auth-pg`. */
  databaseUrl?: string;
  dataDir: string;
  secret: string;
  baseURL: string;
  /** `lifetimeSeconds`: `expiresIn` in seconds. */
  jwt: { issuer: string; audience: string; expiresIn: string; lifetimeSeconds: number };
  /** Seconds after which Better Auth mints a new signing key (unset = manual rotation only). */
  keyRotationInterval?: number;
  /** Seconds a retired key stays in the JWKS (must exceed the JWT lifetime). */
  keyGracePeriod: number;
  trustedOrigins: string[];
  /** Reverse proxies whose X-Forwarded-For entries are trusted for the client IP. */
  trustedProxies: string[];
  redisUrl?: string;
  /** Prefix of every key this service writes in Redis (one Redis may serve several deployments). */
  redisKeyPrefix: string;
  rateLimit: {
    enabled: boolean;
    /**
     * Where counters live without REDIS_URL: "database" (shared by replicas; default with
     * DATABASE_URL) or "memory" (default on the single-process embedded PGlite, where database
     * counters cost 2-3 extra queries per request for no sharing benefit).
     */
    storage: "database" | "memory";
    window: number;
    max: number;
    /** Stricter rule for sign-in and sign-up (both the /api/auth and /auth routes). */
    credentialsWindow: number;
    credentialsMax: number;
    /** Per IP: routes that send a mail (resend verification, request a reset) and reset-password (token guessing). */
    mailWindow: number;
    mailMax: number;
  };
  /** Per-key limit on API-key verifications (each POST /auth/token with `x-api-key` is one). */
  apiKeys: { rateLimitWindow: number; rateLimitMax: number };
  /** Failed sign-ins per account (normalized email), whatever the source address. */
  accountThrottle: { threshold: number; baseSeconds: number; maxSeconds: number; windowSeconds: number };
  /**
   * The account events feed (src/account-events.ts): `token` is the bearer the rag-service
   * presents (unset: the feed answers 401 to everyone; production refuses to start without it);
   * events are kept `retentionDays`.
   */
  accountEvents: { token?: string; retentionDays: number };
  /**
   * The app's page that mail links lead to (APP_URL): links add `#verify-email=<token>`,
   * `#reset-password=<token>` or `#invitation=<id>` to it (src/mail-messages.ts).
   */
  appUrl: string;
  mail: {
    /** Unset: outside production each mail is written to `dir` (src/mailer.ts); production requires it. */
    smtpUrl?: string;
    from: string;
    /** Where the development outbox keeps its .eml files (only without smtpUrl, outside production). */
    dir: string;
    /** Mails of one kind (verification, reset, ...) per address per window; more are dropped silently. */
    perAddressMax: number;
    perAddressWindowSeconds: number;
  };
  /** "required": no session before the address is verified (403 EMAIL_NOT_VERIFIED) and no enumeration at sign-up. */
  emailVerification: "required" | "optional";
  /** Seconds a verification link (sign-up, change of email) stays valid. */
  emailVerificationExpiresIn: number;
  /** Seconds a password-reset link stays valid (single use). */
  passwordResetExpiresIn: number;
  /** Single sign-on providers (OIDC_PROVIDERS, src/sso-config.ts); empty: password accounts only. */
  sso: SsoProvider[];
  /** Sign-in methods beyond the password: the name authenticator apps and passkey prompts show (src/two-factor.ts, src/passkeys.ts). */
  signInDisplayName: string;
  /** The WebAuthn relying party (src/passkeys.ts): `rpId` and the origins whose pages may use passkeys. */
  passkey: { rpId: string; origins: string[] };
  /**
   * The OAuth 2.1 authorization server for MCP clients (src/oauth-server.ts): `resources` are the
   * rag-service resource identifiers (RFC 8707) tokens may be issued for, `registration` turns
   * open dynamic client registration (RFC 7591) on, refresh tokens live `refreshTokenLifetimeSeconds`.
   */
  oauth: { resources: string[]; registration: boolean; refreshTokenLifetimeSeconds: number };
}

export class ConfigError extends Error {}

const MIN_SECRET_LENGTH = 32;

function int(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

function list(raw: string | undefined): string[] {
  return (raw ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}

/** OAUTH_RESOURCES: absolute http(s) URLs without fragment (RFC 8707 section 2). */
function oauthResources(raw: string | undefined): string[] {
  const values = raw === undefined ? ["http://localhost:8000", "http://localhost:8000/mcp"] : list(raw);
  for (const value of values) {
    let url: URL | undefined;
    try {
      url = new URL(value);
    } catch {}
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:") || url.hash || value.includes("#")) {
      throw new ConfigError(`OAUTH_RESOURCES must list absolute http(s) URLs without a fragment (the rag-service's PUBLIC_URL and PUBLIC_URL/mcp), got "${value}"`);
    }
  }
  return values;
}

function resolveEnv(env: NodeJS.ProcessEnv): AuthEnv {
  const raw = (env.AUTH_ENV || env.NODE_ENV || "development").toLowerCase();
  if (raw === "production" || raw === "prod") return "production";
  if (raw === "test") return "test";
  if (raw === "development" || raw === "dev") return "development";
  throw new ConfigError(`AUTH_ENV/NODE_ENV must be development, test or production, got "${raw}"`);
}

/**
 * Production: BETTER_AUTH_SECRET is required and must be at least 32 characters.
 * Dev mode: use it when given; otherwise generate one once and keep it in
 * `${dataDir}/auth-secret` (mode 0600) so sessions and encrypted keys survive restarts.
 */
function resolveSecret(env: NodeJS.ProcessEnv, devMode: boolean, dataDir: string): string {
  const given = env.BETTER_AUTH_SECRET;
  if (!devMode) {
    if (!given) {
      throw new ConfigError(
        "BETTER_AUTH_SECRET is not set. In production it is required: generate one with `openssl rand -base64 32`.",
      );
    }
    if (given.length < MIN_SECRET_LENGTH) {
      throw new ConfigError(
        `BETTER_AUTH_SECRET is too weak (${given.length} characters, at least ${MIN_SECRET_LENGTH} required). Generate one with \`openssl rand -base64 32\`.`,
      );
    }
    return given;
  }
  if (given) return given;
  const file = path.join(dataDir, "auth-secret");
  if (existsSync(file)) {
    const stored = readFileSync(file, "utf8").trim();
    if (stored.length >= MIN_SECRET_LENGTH) return stored;
  }
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(32).toString("base64url");
  writeFileSync(file, secret + "\n", { mode: 0o600 });
  chmodSync(file, 0o600);
  return secret;
}

/**
 * ACCOUNT_EVENTS_TOKEN: 32+ characters whenever set; required in production, where the
 * rag-service could not learn of deletions without it.
 */
function resolveEventsToken(env: NodeJS.ProcessEnv, devMode: boolean): string | undefined {
  const given = env.ACCOUNT_EVENTS_TOKEN || undefined;
  if (!given && !devMode) {
    throw new ConfigError(
      "ACCOUNT_EVENTS_TOKEN is not set. In production it is required (the rag-service reads account deletions with it): generate one with `openssl rand -base64 32` and give the same value to the rag-service.",
    );
  }
  if (given && given.length < MIN_SECRET_LENGTH) {
    throw new ConfigError(`ACCOUNT_EVENTS_TOKEN is too short (${given.length} characters, at least ${MIN_SECRET_LENGTH} required).`);
  }
  return given;
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };
const DURATION = /^(\d+) ?(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)$/i;

/** JWT_EXPIRES_IN ("30s", "15m", "1h", "2 days": the forms jose accepts, whole numbers) in seconds. */
export function durationSeconds(name: string, raw: string): number {
  const match = DURATION.exec(raw.trim());
  const unit = match?.[2]?.toLowerCase();
  const seconds = match && unit ? Number(match[1]) * DURATION_UNITS[unit[0]!]! : 0;
  if (!seconds) throw new ConfigError(`${name} must be a duration such as 30s, 15m or 1h, got "${raw}"`);
  return seconds;
}

function emailVerificationMode(raw: string | undefined, authEnv: AuthEnv): "required" | "optional" {
  const v = (raw || (authEnv === "production" ? "required" : "optional")).toLowerCase();
  if (v !== "required" && v !== "optional") throw new ConfigError(`EMAIL_VERIFICATION must be required or optional, got "${raw}"`);
  return v;
}

function appUrl(raw: string | undefined): string {
  const value = raw || "http://localhost:5173";
  try {
    const url = new URL(value);
    if (url.protocol === "http:" || url.protocol === "https:") return value;
  } catch {}
  throw new ConfigError(`APP_URL must be an http(s) URL (the app page mail links open), got "${value}"`);
}

/** Production mails go through SMTP with a real sender address; elsewhere the outbox folder is the default. */
function mailSettings(env: NodeJS.ProcessEnv, devMode: boolean, dataDir: string): Config["mail"] {
  const smtpUrl = env.SMTP_URL || undefined;
  if (!devMode && !smtpUrl) {
    throw new ConfigError("SMTP_URL is not set. In production mails (verification, password reset, invitations) need an SMTP server: smtp://user:password@host:587 or smtps://...:465.");
  }
  if (smtpUrl && !/^smtps?:\/\//.test(smtpUrl)) throw new ConfigError("SMTP_URL must start with smtp:// or smtps://");
  const from = env.MAIL_FROM || (devMode ? "auth-service <no-reply@localhost>" : "");
  if (!from) throw new ConfigError("MAIL_FROM is not set. In production it is required, e.g. \"Acme <no-reply@acme.example>\".");
  return {
    smtpUrl,
    from,
    dir: path.resolve(env.MAIL_DIR || path.join(dataDir, "mail")),
    perAddressMax: Math.max(1, int(env, "MAIL_PER_ADDRESS_MAX", 5)),
    perAddressWindowSeconds: Math.max(1, int(env, "MAIL_PER_ADDRESS_WINDOW", 3600)),
  };
}

function rateLimitStorage(raw: string | undefined, databaseUrl: string | undefined): "database" | "memory" {
  const v = (raw || (databaseUrl ? "database" : "memory")).toLowerCase();
  if (v !== "database" && v !== "memory") throw new ConfigError(`AUTH_RATE_LIMIT_STORAGE must be database or memory, got "${raw}"`);
  return v;
}

function ssoProviders(env: NodeJS.ProcessEnv, devMode: boolean): SsoProvider[] {
  try {
    return parseSsoProviders(env.OIDC_PROVIDERS, env, devMode);
  } catch (err) {
    throw err instanceof SsoConfigError ? new ConfigError(err.message) : err;
  }
}

/**
 * The passkeys' relying party, from the same TRUSTED_ORIGINS as everything else (the service's
 * own origin when none is set). PASSKEY_RP_ID (default: the first origin's host) must be the host
 * of, or a parent domain of, an origin's host for that origin to use passkeys: the others cannot
 * (a browser refuses such an rpId there). An rpId that covers no origin is a configuration error.
 */
export function passkeyRelyingParty(rawRpId: string | undefined, trustedOrigins: string[], baseURL: string): Config["passkey"] {
  const candidates = (trustedOrigins.length ? trustedOrigins : [baseURL]).map((o) => {
    try {
      return new URL(o);
    } catch {
      throw new ConfigError(`TRUSTED_ORIGINS must hold origins such as https://app.example.com, got "${o}"`);
    }
  });
  const rpId = (rawRpId || candidates[0]!.hostname).toLowerCase();
  const origins = candidates.filter((u) => u.hostname === rpId || u.hostname.endsWith(`.${rpId}`)).map((u) => u.origin);
  if (!origins.length) {
    throw new ConfigError(`PASSKEY_RP_ID "${rpId}" is neither the host nor a parent domain of any trusted origin (${candidates.map((u) => u.origin).join(", ")})`);
  }
  return { rpId, origins };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const authEnv = resolveEnv(env);
  const devMode = authEnv !== "production";
  const port = int(env, "PORT", 3001);
  const dataDir = path.resolve(env.AUTH_DATA_DIR || "./data");
  const baseURL = (env.BETTER_AUTH_URL || `http://localhost:${port}`).replace(/\/+$/, "");
  const expiresIn = env.JWT_EXPIRES_IN || "15m";
  const rotation = env.JWT_KEY_ROTATION_INTERVAL ? int(env, "JWT_KEY_ROTATION_INTERVAL", 0) : undefined;
  return {
    env: authEnv,
    devMode,
    port,
    host: env.HOST || "127.0.0.1",
    databaseUrl: env.DATABASE_URL || undefined,
    dataDir,
    secret: resolveSecret(env, devMode, dataDir),
    baseURL,
    jwt: {
      issuer: env.JWT_ISSUER || baseURL,
      audience: env.JWT_AUDIENCE || "rag-service",
      expiresIn,
      lifetimeSeconds: durationSeconds("JWT_EXPIRES_IN", expiresIn),
    },
    keyRotationInterval: rotation || undefined,
    keyGracePeriod: int(env, "JWT_KEY_GRACE_PERIOD", 86_400),
    trustedOrigins: list(env.TRUSTED_ORIGINS),
    trustedProxies: list(env.TRUSTED_PROXIES),
    redisUrl: env.REDIS_URL || undefined,
    redisKeyPrefix: env.REDIS_KEY_PREFIX || "auth-service:rl:",
    rateLimit: {
      enabled: !["0", "false", "off"].includes((env.AUTH_RATE_LIMIT_ENABLED ?? "true").toLowerCase()),
      storage: rateLimitStorage(env.AUTH_RATE_LIMIT_STORAGE, env.DATABASE_URL),
      window: int(env, "AUTH_RATE_LIMIT_WINDOW", 10),
      max: int(env, "AUTH_RATE_LIMIT_MAX", 100),
      credentialsWindow: int(env, "AUTH_RATE_LIMIT_SIGNIN_WINDOW", 60),
      credentialsMax: int(env, "AUTH_RATE_LIMIT_SIGNIN_MAX", 5),
      mailWindow: int(env, "AUTH_RATE_LIMIT_MAIL_WINDOW", 300),
      mailMax: int(env, "AUTH_RATE_LIMIT_MAIL_MAX", 5),
    },
    apiKeys: {
      rateLimitWindow: Math.max(1, int(env, "API_KEY_RATE_LIMIT_WINDOW", 60)),
      rateLimitMax: Math.max(1, int(env, "API_KEY_RATE_LIMIT_MAX", 30)),
    },
    accountThrottle: {
      threshold: Math.max(1, int(env, "AUTH_ACCOUNT_LOCK_THRESHOLD", 5)),
      baseSeconds: Math.max(1, int(env, "AUTH_ACCOUNT_LOCK_BASE_SECONDS", 30)),
      maxSeconds: Math.max(1, int(env, "AUTH_ACCOUNT_LOCK_MAX_SECONDS", 900)),
      windowSeconds: Math.max(1, int(env, "AUTH_ACCOUNT_FAILURE_WINDOW", 900)),
    },
    accountEvents: {
      token: resolveEventsToken(env, devMode),
      retentionDays: Math.max(1, int(env, "ACCOUNT_EVENTS_RETENTION_DAYS", 30)),
    },
    appUrl: appUrl(env.APP_URL),
    mail: mailSettings(env, devMode, dataDir),
    emailVerification: emailVerificationMode(env.EMAIL_VERIFICATION, authEnv),
    emailVerificationExpiresIn: Math.max(1, int(env, "EMAIL_VERIFICATION_EXPIRES_IN", 86_400)),
    passwordResetExpiresIn: Math.max(1, int(env, "PASSWORD_RESET_EXPIRES_IN", 3600)),
    signInDisplayName: env.SIGN_IN_DISPLAY_NAME || "RAG backend",
    passkey: passkeyRelyingParty(env.PASSKEY_RP_ID, list(env.TRUSTED_ORIGINS), baseURL),
    sso: ssoProviders(env, devMode),
    oauth: {
      resources: oauthResources(env.OAUTH_RESOURCES),
      registration: !["0", "false", "off"].includes((env.OAUTH_DYNAMIC_REGISTRATION ?? "true").toLowerCase()),
      refreshTokenLifetimeSeconds: Math.max(60, int(env, "OAUTH_REFRESH_TOKEN_EXPIRES_IN", 2_592_000)),
    },
  };
}
