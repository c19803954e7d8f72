// The Better Auth instance: email + password, EdDSA JWTs (jwt plugin), signed bearer sessions,
// organizations (teams), two-factor codes and passkeys (src/two-factor.ts, src/passkeys.ts),
// single sign-on (src/sso.ts), rate limits per IP and per account, input bounds and the password
// policy (hooks).
import { betterAuth } from "better-auth";
import { APIError, createAuthMiddleware, isAPIError } from "better-auth/api";
import { bearer, jwt } from "better-auth/plugins";
import { accessTokenUser } from "./access-token-user.js";
import { accountMailOptions, cappedSender, invitationErrors, mailInvitationSender, passwordChangeEndsOtherSessions } from "./account-mail.js";
import { apiKeyExchange, apiKeyPlugin } from "./api-keys.js";
import { accountThrottle, memoryThrottleStore, type AccountThrottleStore } from "./account-throttle.js";
import type { Config } from "./config.js";
import type { Database } from "./db.js";
import { checkDeletionConfirmed, deleteUserOptions } from "./account-deletion.js";
import { accountEventLog, issuedAt, type AccountEventLog } from "./account-events.js";
import type { Mail, Mailer } from "./mailer.js";
import { organizationPlugin, orgsPayload, type InvitationSender, type MemberStore } from "./organizations.js";
import { checkBody, nameProblem, PASSWORD_MAX, PASSWORD_MIN } from "./input-policy.js";
import { oauthServerPlugins } from "./oauth-server.js";
import { hashPassword, needsRehash, verifyPassword } from "./password-hashing.js";
import type { RateLimitStore } from "./rate-limit-redis.js";
import { safeLog } from "./safe-log.js";
import { passkeyPlugin } from "./passkeys.js";
import { secondFactorGuard, twoFactorPlugin } from "./two-factor.js";
import { ssoOptions } from "./sso.js";

/** Header our HTTP layer sets from the socket address (any client-sent value is replaced). */
export const CLIENT_IP_HEADER = "x-auth-client-ip";

export { NAME_MAX, NAME_MIN, PASSWORD_MAX, PASSWORD_MIN } from "./input-policy.js";

function checkName(name: unknown): void {
  const problem = nameProblem(name);
  if (problem) throw new APIError("BAD_REQUEST", { code: "INVALID_NAME", message: problem });
}

/** Where the instance keeps its counters, and how it delivers mails and invitations. */
export interface AuthStores {
  /** Better Auth `rateLimit.customStorage` (Redis); unset -> Better Auth's memory/database storage. */
  rateLimit?: RateLimitStore;
  /** Failed sign-ins per account, and the per-address mail cap (src/account-mail.ts). */
  accountThrottle: AccountThrottleStore;
  /** Delivers every mail (src/mailer.ts); unset only for migrations, which send nothing. */
  mailer?: Mailer;
  /** Delivers organization invitations; unset -> an invitation mail through `mailer`. */
  sendInvitation?: InvitationSender;
  /** The account events (src/account-events.ts): the `iat` of new tokens reads the latest membership change. */
  events: AccountEventLog;
}

function noMail(_mail: Mail): void {
  throw new Error("this Better Auth configuration has no mailer (migrations only)");
}

type AfterHookContext = Parameters<Parameters<typeof createAuthMiddleware>[0]>[0];

/**
 * Duplicate sign-ups return before Better Auth hashes the password (13 ms vs 300 ms): hash it
 * anyway so the answer takes as long as a real sign-up (docs/security.md, "Enumeration").
 */
async function equalizeDuplicateSignUp(ctx: AfterHookContext): Promise<void> {
  if (ctx.path !== "/sign-up/email") return;
  const returned = ctx.context.returned;
  const password = (ctx.body as { password?: unknown } | undefined)?.password;
  if (isAPIError(returned) && returned.body?.code?.startsWith("USER_ALREADY_EXISTS") && typeof password === "string") {
    await ctx.context.password.hash(password);
  }
}

/**
 * After a successful email sign-in, a password still stored as a legacy (scrypt) or outdated
 * hash is re-hashed with the current argon2id parameters: the plain password is only known here.
 */
async function rehashOnSignIn(ctx: AfterHookContext): Promise<void> {
  if (ctx.path !== "/sign-in/email") return;
  const userId = ctx.context.newSession?.user.id;
  const password = (ctx.body as { password?: unknown } | undefined)?.password;
  if (!userId || typeof password !== "string") return;
  const accounts = await ctx.context.internalAdapter.findAccounts(userId);
  const stored = accounts.find((account) => account.providerId === "credential")?.password;
  if (!stored || !needsRehash(stored)) return;
  await ctx.context.internalAdapter.updatePassword(userId, await ctx.context.password.hash(password));
}

const beforeHooks = createAuthMiddleware(async (ctx) => {
  checkBody(ctx.path, ctx.body);
  checkDeletionConfirmed(ctx.path, ctx.body);
});

const afterHooks = createAuthMiddleware(async (ctx) => {
  await equalizeDuplicateSignUp(ctx);
  await rehashOnSignIn(ctx);
});

/**
 * `self` returns the Better Auth instance built from these options (the key exchange calls the
 * API-key plugin through it, token payloads and organization hooks read memberships through its
 * adapter); migrations never call it.
 */
export function authOptions(
  config: Config,
  database: Database,
  stores: AuthStores = { accountThrottle: memoryThrottleStore(), events: accountEventLog(database.db, config.accountEvents.retentionDays) },
  self: () => Auth = () => {
    throw new Error("this Better Auth configuration has no instance (migrations only)");
  },
) {
  const credentialsRule = { window: config.rateLimit.credentialsWindow, max: config.rateLimit.credentialsMax };
  const mailRule = { window: config.rateLimit.mailWindow, max: config.rateLimit.mailMax };
  const sendMail = stores.mailer ? cappedSender(config, stores.mailer, stores.accountThrottle) : noMail;
  const mailOptions = accountMailOptions(config, sendMail);
  const memberStore = async (): Promise<MemberStore> => (await self().$context).adapter;
  const sessionUser = async (headers: Headers): Promise<string | null> => (await self().api.getSession({ headers }))?.user.id ?? null;
  const events = stores.events;
  const sso = ssoOptions(config);
  const jwtOptions = {
    jwt: {
      issuer: config.jwt.issuer,
      audience: config.jwt.audience,
      expirationTime: config.jwt.expiresIn,
      // Only what the rag-service needs: `sub` (added by the plugin), the session id and the
      // organization memberships, read now (src/organizations.ts); `iat` is taken before they
      // are read and after the user's latest membership change (src/account-events.ts).
      definePayload: async ({ session }: { session: { id: string; userId: string; activeOrganizationId?: string | null } }) => {
        const startedAt = Date.now();
        const iat = issuedAt(startedAt, await events.latestMembershipChange(session.userId));
        return { sid: session.id, iat, ...(await orgsPayload(await memberStore(), session.userId, session.activeOrganizationId)) };
      },
    },
    jwks: {
      keyPairConfig: { alg: "EdDSA" as const, crv: "Ed25519" as const },
      rotationInterval: config.keyRotationInterval,
      gracePeriod: config.keyGracePeriod,
    },
  };
  return {
    appName: "auth-service",
    baseURL: config.baseURL,
    basePath: "/api/auth",
    secret: config.secret,
    database: database.betterAuth,
    trustedOrigins: config.trustedOrigins,
    telemetry: { enabled: false },
    // Failed sign-ins are logged at "warn"; the test suite provokes plenty of them.
    logger: { level: config.env === "test" ? ("error" as const) : ("warn" as const), log: safeLog },
    // Errors leave the handler: an APIError becomes its answer (given the envelope in src/http.ts),
    // anything else reaches app.ts onError (one safe log line with the request id, a 500), instead
    // of Better Auth printing each refusal through its default logger, unredacted and without the id.
    onAPIError: { throw: true },
    emailAndPassword: {
      enabled: true,
      minPasswordLength: PASSWORD_MIN,
      maxPasswordLength: PASSWORD_MAX,
      autoSignIn: true,
      password: { hash: hashPassword, verify: verifyPassword },
      ...mailOptions.emailAndPassword,
    },
    emailVerification: mailOptions.emailVerification,
    socialProviders: sso.socialProviders,
    account: sso.account,
    user: { ...mailOptions.user, ...deleteUserOptions(database.db) },
    verification: mailOptions.verification,
    hooks: { before: beforeHooks, after: afterHooks },
    databaseHooks: {
      user: {
        create: { before: async (user: { name?: unknown }) => { checkName(user.name); } },
        update: {
          before: async (user: { name?: unknown }) => { if (user.name !== undefined) checkName(user.name); },
        },
      },
    },
    rateLimit: {
      enabled: config.rateLimit.enabled,
      window: config.rateLimit.window,
      max: config.rateLimit.max,
      storage: config.rateLimit.storage,
      ...(stores.rateLimit ? { customStorage: stores.rateLimit } : {}),
      customRules: {
        "/sign-in/email": credentialsRule,
        "/sign-up/email": credentialsRule,
        "/sign-in/social": credentialsRule,
        // Code guesses per IP (the plugin's own rule is 3 per 10 s); per account: src/two-factor.ts.
        "/two-factor/*": credentialsRule,
        // Routes that mail someone, and reset-password (a token guess per request).
        "/send-verification-email": mailRule,
        "/request-password-reset": mailRule,
        "/reset-password": mailRule,
        "/change-email": mailRule,
        // Verifiers (the rag-service) must always get the keys, whatever else is limited.
        "/jwks": false as const,
      },
    },
    advanced: {
      ipAddress: {
        // Only our own header: app.ts overwrites it with the socket peer address, or with
        // "<x-forwarded-for>, <peer>" when TRUSTED_PROXIES is set (Better Auth then walks the
        // chain right to left, skipping trusted proxies).
        ipAddressHeaders: [CLIENT_IP_HEADER],
        trustedProxies: config.trustedProxies,
        // One IPv6 client usually owns a whole /64: it is one rate-limit bucket.
        ipv6Subnet: 64 as const,
      },
    },
    plugins: [
      jwt(jwtOptions),
      // Only the signed session token (`<token>.<hmac>`, what sign-in returns) is a bearer;
      // the raw token as stored in the database is not.
      bearer({ requireSignature: true }),
      accountThrottle(stores.accountThrottle, config.accountThrottle),
      accessTokenUser(jwtOptions),
      apiKeyPlugin(config),
      apiKeyExchange(self, jwtOptions, events),
      organizationPlugin(memberStore, stores.sendInvitation ?? mailInvitationSender(config, sendMail)),
      invitationErrors(),
      passwordChangeEndsOtherSessions(),
      twoFactorPlugin(config.signInDisplayName),
      secondFactorGuard(database.db, stores.accountThrottle, config.accountThrottle, sessionUser),
      passkeyPlugin(config, database.db),
      ...sso.plugins,
      // OAuth 2.1 authorization server for MCP clients (src/oauth-server.ts).
      ...oauthServerPlugins(config, memberStore),
    ],
  };
}

export function createAuth(config: Config, database: Database, stores?: AuthStores) {
  // Bound after creation: the key-exchange endpoint calls the API-key plugin through it.
  let auth: ReturnType<typeof betterAuth<ReturnType<typeof authOptions>>>;
  auth = betterAuth(authOptions(config, database, stores, () => auth as unknown as Auth));
  return auth;
}

export type Auth = ReturnType<typeof createAuth>;
