// The Hono app: security headers, a body limit, CORS, /health, Better Auth at /api/auth/*,
// seed-contract routes at /auth/*, the account events feed at /auth/events.
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
  events = accountEventLog(database.db, config.accountEvents.retentionDays),
}: {
  config: Config;
  auth: Auth;
  database: Database;
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

  app.on(["GET", "POST"], "/api/auth/*", (c) => proxyToAuth(auth, c, trustProxies));
  app.route("/auth/events", accountEventsRoutes(events, config));
  app.route("/auth", contractRoutes(auth, { trustProxies }));

  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((err, c) => {
    console.error(`[auth-service] unhandled error on ${c.req.method} ${c.req.path}: ${describeError(err)}`);
    return c.json(errorBody("internal_error", "internal server error"), 500);
  });
  return app;
}
