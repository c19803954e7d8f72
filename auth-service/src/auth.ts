// The Better Auth instance: email + password, EdDSA JWTs (jwt plugin), bearer sessions, rate limits.
import { betterAuth } from "better-auth";
import { APIError } from "better-auth/api";
import { bearer, jwt } from "better-auth/plugins";
import type { Config } from "./config.js";
import type { Database } from "./db.js";
import { createRedisRateLimitStorage, type RateLimitStore } from "./rate-limit-redis.js";

/** Header our HTTP layer sets from the socket address (any client-sent value is replaced). */
export const CLIENT_IP_HEADER = "x-auth-client-ip";

export const NAME_MIN = 1;
export const NAME_MAX = 200;
export const PASSWORD_MIN = 8;
export const PASSWORD_MAX = 128;

function checkName(name: unknown): void {
  const trimmed = typeof name === "string" ? name.trim() : "";
  if (trimmed.length < NAME_MIN || trimmed.length > NAME_MAX) {
    throw new APIError("BAD_REQUEST", {
      code: "INVALID_NAME",
      message: `name must be ${NAME_MIN} to ${NAME_MAX} characters`,
    });
  }
}

export function authOptions(config: Config, database: Database, rateLimitStore?: RateLimitStore) {
  const credentialsRule = { window: config.rateLimit.credentialsWindow, max: config.rateLimit.credentialsMax };
  return {
    appName: "auth-service",
    baseURL: config.baseURL,
    basePath: "/api/auth",
    secret: config.secret,
    database: database.betterAuth,
    trustedOrigins: config.trustedOrigins,
    telemetry: { enabled: false },
    // Failed sign-ins are logged at "warn"; the test suite provokes plenty of them.
    logger: { level: config.env === "test" ? ("error" as const) : ("warn" as const) },
    emailAndPassword: {
      enabled: true,
      minPasswordLength: PASSWORD_MIN,
      maxPasswordLength: PASSWORD_MAX,
      autoSignIn: true,
    },
    databaseHooks: {
      user: {
        create: { before: async (user: { name?: unknown }) => { checkName(user.name); } },
        update: {
          before: async (user: { name?: unknown }) => { if ("name" in user) checkName(user.name); },
        },
      },
    },
    rateLimit: {
      enabled: config.rateLimit.enabled,
      window: config.rateLimit.window,
      max: config.rateLimit.max,
      storage: config.rateLimit.storage,
      ...(rateLimitStore ? { customStorage: rateLimitStore } : {}),
      customRules: {
        "/sign-in/email": credentialsRule,
        "/sign-up/email": credentialsRule,
      },
    },
    advanced: {
      ipAddress: {
        // Only our own header: app.ts overwrites it with the socket peer address, or with
        // "<x-forwarded-for>, <peer>" when TRUSTED_PROXIES is set (Better Auth then walks the
        // chain right to left, skipping trusted proxies).
        ipAddressHeaders: [CLIENT_IP_HEADER],
        trustedProxies: config.trustedProxies,
      },
    },
    plugins: [
      jwt({
        jwt: {
          issuer: config.jwt.issuer,
          audience: config.jwt.audience,
          expirationTime: config.jwt.expiresIn,
        },
        jwks: {
          keyPairConfig: { alg: "EdDSA", crv: "Ed25519" },
          rotationInterval: config.keyRotationInterval,
          gracePeriod: config.keyGracePeriod,
        },
      }),
      bearer(),
    ],
  };
}

export function createAuth(config: Config, database: Database, rateLimitStore?: RateLimitStore) {
  return betterAuth(authOptions(config, database, rateLimitStore));
}

export type Auth = ReturnType<typeof createAuth>;
export { createRedisRateLimitStorage };
