// Database: embedded PGlite (default) or a real Postgres via `pg` when DATABASE_URL is set.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { Kysely, PostgresDialect, sql } from "kysely";
import { KyselyPGlite } from "kysely-pglite";
import pg from "pg";
import type { Config } from "./config.js";
import { describeError, logLine } from "./safe-log.js";

export interface Database {
  kind: "pglite" | "postgres";
  db: Kysely<any>;
  /** Better Auth `database` option. */
  betterAuth: { db: Kysely<any>; type: "postgres"; transaction: boolean };
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

export function createDatabase(config: Pick<Config, "databaseUrl" | "dataDir">): Database {
  let db: Kysely<any>;
  let kind: Database["kind"];
  if (config.databaseUrl) {
    kind = "postgres";
    const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10, connectionTimeoutMillis: 5_000 });
    // An idle client losing its connection must not crash the process.
    pool.on("error", (err) => logLine("error", `postgres pool error: ${describeError(err)}`));
    db = new Kysely({ dialect: new PostgresDialect({ pool }) });
  } else {
    kind = "pglite";
    const dir = path.join(config.dataDir, "auth-pg");
    mkdirSync(dir, { recursive: true });
    db = new Kysely({ dialect: new KyselyPGlite(dir).dialect });
  }
  let closed = false;
  return {
    kind,
    db,
    // kysely-pglite issues BEGIN/COMMIT on PGlite's single shared connection, so concurrent
    // requests could interleave inside a transaction: Better Auth transactions are only
    // enabled on a real Postgres pool.
    betterAuth: { db, type: "postgres", transaction: kind === "postgres" },
    async ping(timeoutMs = 2_000) {
      if (closed) return false;
      let timer: NodeJS.Timeout | undefined;
      try {
        const timeout = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("timeout")), timeoutMs);
        });
        await Promise.race([sql`select 1`.execute(db), timeout]);
        return true;
      } catch {
        return false;
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.destroy();
    },
  };
}
