// The Hono app: security headers, a body limit, CORS, /health, Better Auth at /api/auth/*,
// seed-contract routes at /auth/*, the account events feed at /auth/events, the OAuth
// authorization server's discovery documents and pages (src/oauth-server.ts), the development
// mailbox at /dev/mailbox.
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import type { Auth } from "./auth.js";
import type { Config } from "./config.js";
import type { Database } from "./db.js";
import { proxyToAuth } from "./http.js";
import { limiterHealth } from "./limiter-health.js";
import { accountEventLog, accountEventsRoutes, type AccountEventLog } from "./account-events.js";
import { errorBody } from "./errors.js";
import { mailboxRoutes } from "./mailbox.js";
import type { Mailer } from "./mailer.js";
import { oauthRoutes } from "./oauth-server.js";
import { contractRoutes } from "./routes.js";
import { describeError } from "./safe-log.js";

/** Largest request body on any route: credentials and profile updates are a few hundred bytes. */
export const BODY_LIMIT_BYTES = 64 * 1024;

/** Every response: never cached (tokens, profiles, events), no MIME sniffing, no Referer leaks. */
const securityHeaders: MiddlewareHandler = async (c, next) => {
  await next();
  c.res.headers.set("Cache-Control", "no-store");
  c.res.headers.set("X-Content-Type-Options", "nosniff");
  c.res.headers.set("Referrer-Policy", "no-referrer");
};

/**
 * Answers no sooner than `ms` after the request came in. A reset request for a known address
 * writes a token and queues a mail (whose delivery then shares the process with the next
 * requests); for an unknown one it only reads: the floor, above both, makes them look alike.
 */
export function minimumDuration(ms: number): MiddlewareHandler {
  return async (_c, next) => {
    const started = performance.now();
    await next();
    const remaining = ms - (performance.now() - started);
    if (remaining > 0) await new Promise((resolve) => setTimeout(resolve, remaining));
  };
}

/** The floor under POST /api/auth/request-password-reset (docs/security.md, "Enumeration"). */
export const PASSWORD_RESET_REQUEST_FLOOR_MS = 500;
/**
 * With required verification, the floor under sign-up (both routes): a new address costs two
 * inserts in a transaction more than a registered one (measured on a loaded Postgres: medians
 * 295 vs 152 ms once), the floor hides it.
 */
export const SIGN_UP_FLOOR_MS = 750;

/** CORS with credentials, only for TRUSTED_ORIGINS; other origins get no CORS headers at all. */
function trustedCors(origins: string[]): MiddlewareHandler {
  const allowed = new Set(origins);
  const mw = cors({
    origin: (origin) => (allowed.has(origin) ? origin : null),
    credentials: true,
    allowMethods: ["GET", "POST", "DELETE", "OPTIONS"],
    allowHeaders: ["Content-Type", "Authorization", "X-Api-Key"],
    exposeHeaders: ["set-auth-token", "set-auth-jwt", "Retry-After"],
    maxAge: 600,
  });
  return async (c, next) => {
    const origin = c.req.header("origin");
    if (origin && allowed.has(origin)) return mw(c, next);
    await next();
  };
}

export function createApp({
  config,
  auth,
  database,
  mailer,
  events = accountEventLog(database.db, config.accountEvents.retentionDays),
}: {
  config: Config;
  auth: Auth;
  database: Database;
  mailer: Mailer;
  events?: AccountEventLog;
}) {
  const app = new Hono();
  const trustProxies = config.trustedProxies.length > 0;

  app.use("*", securityHeaders);
  app.use(
    "*",
    bodyLimit({
      maxSize: BODY_LIMIT_BYTES,
      // The rest of the body is not read: close the connection rather than reuse it.
      onError: (c) => c.json(errorBody("payload_too_large", `request body exceeds ${BODY_LIMIT_BYTES} bytes`), 413, { Connection: "close" }),
    }),
  );

  app.use("/api/auth/*", trustedCors(config.trustedOrigins));
  app.use("/auth/*", trustedCors(config.trustedOrigins));

  app.get("/health", async (c) => {
    const ok = await database.ping();
    // With Redis, how often the limiter let a request through because Redis did not answer.
    const limiter = config.redisUrl ? { rate_limit: { store: "redis", fail_open: limiterHealth.failOpen } } : {};
    return c.json({ status: ok ? "ok" : "degraded", services: { database: ok }, ...limiter }, ok ? 200 : 503);
  });

  app.use("/api/auth/request-password-reset", minimumDuration(PASSWORD_RESET_REQUEST_FLOOR_MS));
  if (config.emailVerification === "required") {
    app.use("/api/auth/sign-up/email", minimumDuration(SIGN_UP_FLOOR_MS));
    app.use("/auth/signup", minimumDuration(SIGN_UP_FLOOR_MS));
  }
  app.on(["GET", "POST"], "/api/auth/*", (c) => proxyToAuth(auth, c, trustProxies));
  app.route("/auth/events", accountEventsRoutes(events, config));
  app.route("/auth", contractRoutes(auth, { trustProxies }));
  app.route("/", oauthRoutes(auth, config, trustProxies));
  // Development only, and only when mails go to the outbox folder (src/mailbox.ts).
  if (config.devMode && mailer.outboxDir) app.route("/dev/mailbox", mailboxRoutes(mailer.outboxDir));

  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((err, c) => {
    console.error(`[auth-service] unhandled error on ${c.req.method} ${c.req.path}: ${describeError(err)}`);
    return c.json(errorBody("internal_error", "internal server error"), 500);
  });
  return app;
}
