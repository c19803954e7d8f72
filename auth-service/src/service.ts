// Wiring: config -> database -> migrations -> Better Auth -> Hono app -> listening server.
import { serve, type ServerType } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { accountEventLog } from "./account-events.js";
import { createApp } from "./app.js";
import { databaseThrottleStore, memoryThrottleStore, redisThrottleStore } from "./account-throttle.js";
import { createAuth, type Auth, type AuthStores } from "./auth.js";
import type { Config } from "./config.js";
import { createDatabase, type Database } from "./db.js";
import { createMailer, type Mailer } from "./mailer.js";
import { migrate } from "./migrate.js";
import type { InvitationSender } from "./organizations.js";
import { createRedisClient, createRedisRateLimitStorage } from "./rate-limit-redis.js";

export interface RunningService {
  url: string;
  port: number;
  config: Config;
  auth: Auth;
  database: Database;
  mailer: Mailer;
  app: ReturnType<typeof createApp>;
  close(): Promise<void>;
}

/**
 * Starts the service. `shared.database` lets several instances (tests) use one open database;
 * it is then left open by close(). `shared.sendInvitation` delivers organization invitations
 * (default: src/organizations.ts defaultInvitationSender).
 */
export async function startServer(
  config: Config,
  shared: { database?: Database; sendInvitation?: InvitationSender } = {},
): Promise<RunningService> {
  const database = shared.database ?? createDatabase(config);
  await migrate(config, database);
  // Failed sign-ins per account live in the same store as the per-IP limiter.
  const redis = config.redisUrl ? createRedisClient(config.redisUrl) : undefined;
  const stores: Omit<AuthStores, "events"> = redis
    ? {
        rateLimit: createRedisRateLimitStorage(redis, config.redisKeyPrefix),
        accountThrottle: redisThrottleStore(redis, config.redisKeyPrefix),
      }
    : { accountThrottle: config.rateLimit.storage === "database" ? databaseThrottleStore(database.db) : memoryThrottleStore() };
  const events = accountEventLog(database.db, config.accountEvents.retentionDays);
  // Also pruned before each feed answer; this covers a deployment whose feed is never read.
  await events.prune();
  const mailer = createMailer(config);
  const auth = createAuth(config, database, { ...stores, events, mailer, sendInvitation: shared.sendInvitation });
  const app = createApp({ config, auth, database, mailer, events });
  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host }, () => resolve(s));
  });
  const port = (server.address() as AddressInfo).port;
  const host = config.host.includes(":") ? `[${config.host}]` : config.host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    config,
    auth,
    database,
    mailer,
    app,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Keep-alive sockets would hold close() open.
          (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
        });
        // Mails already queued are still delivered (or given up after their retries).
        await mailer.close();
        redis?.disconnect();
        if (!shared.database) await database.close();
      })();
      return closing;
    },
  };
}
