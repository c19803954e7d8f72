// The Hono app: CORS, /health, Better Auth at /api/auth/*, seed-contract routes at /auth/*.
import { Hono, type MiddlewareHandler } from "hono";
import { cors } from "hono/cors";
import type { Auth } from "./auth.js";
import type { Config } from "./config.js";
import type { Database } from "./db.js";
import { proxyToAuth } from "./http.js";
import { contractRoutes, errorBody } from "./routes.js";

/** CORS with credentials, only for TRUSTED_ORIGINS; other origins get no CORS headers at all. */
function trustedCors(origins: string[]): MiddlewareHandler {
  const allowed = new Set(origins);
  const mw = cors({
    origin: (origin) => (allowed.has(origin) ? origin : null),
    credentials: true,
    allowMethods: ["GET", "POST", "OPTIONS"],
    allowHeaders: ["Content-Type", "Authorization"],
    exposeHeaders: ["set-auth-token", "set-auth-jwt", "Retry-After"],
    maxAge: 600,
  });
  return async (c, next) => {
    const origin = c.req.header("origin");
    if (origin && allowed.has(origin)) return mw(c, next);
    await next();
  };
}

export function createApp({ config, auth, database }: { config: Config; auth: Auth; database: Database }) {
  const app = new Hono();
  const trustProxies = config.trustedProxies.length > 0;

  app.use("/api/auth/*", trustedCors(config.trustedOrigins));
  app.use("/auth/*", trustedCors(config.trustedOrigins));

  app.get("/health", async (c) => {
    const ok = await database.ping();
    return c.json({ status: ok ? "ok" : "degraded", services: { database: ok } }, ok ? 200 : 503);
  });

  app.on(["GET", "POST"], "/api/auth/*", (c) => proxyToAuth(auth, c, trustProxies));
  app.route("/auth", contractRoutes(auth, { trustProxies }));

  app.notFound((c) => c.json(errorBody("not_found", `no route for ${c.req.method} ${c.req.path}`), 404));
  app.onError((err, c) => {
    console.error("[auth-service] unhandled error:", err);
    return c.json(errorBody("internal_error", "internal server error"), 500);
  });
  return app;
}
