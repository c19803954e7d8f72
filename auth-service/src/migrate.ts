// Schema migrations through Better Auth's own migrator (user, session, account, verification,
// jwks, rateLimit, apikey, organization, member, invitation, session.activeOrganizationId, twoFactor,
// user.twoFactorEnabled, passkey, and the OAuth provider's oauthClient, oauthResource,
// oauthClientResource, oauthRefreshToken, oauthAccessToken, oauthConsent, oauthClientAssertion:
// src/oauth-server.ts) plus the used-TOTP-code claims (src/two-factor.ts),
// the per-account throttle table and the account events (table, prune watermark and the triggers
// on Better Auth's user, organization and member tables: src/account-events.ts). `npm run migrate` runs them without
// starting the server. On Postgres they run under an advisory lock, so replicas that start
// together migrate one after the other (the later ones find the schema up to date).
import { getMigrations } from "better-auth/db/migration";
import { sql } from "kysely";
import { THROTTLE_TABLE } from "./account-throttle.js";
import { migrateAccountEvents } from "./account-events.js";
import { migrateTotpClaims } from "./two-factor.js";
import { authOptions } from "./auth.js";
import { ConfigError, loadConfig, type Config } from "./config.js";
import { createDatabase, type Database } from "./db.js";

/** pg_advisory_lock key: a constant shared by all auth-service processes ("auth" in ASCII). */
export const MIGRATION_LOCK_KEY = 0x61757468;

export async function migrate(config: Config, database: Database): Promise<string[]> {
  // PGlite is one process on its own data directory: nothing to race with.
  if (database.kind === "pglite") return migrateUnlocked(config, database);
  // The lock is held on one pooled connection while the migrator uses others.
  return database.db.connection().execute(async (conn) => {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`.execute(conn);
    try {
      return await migrateUnlocked(config, database);
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`.execute(conn);
    }
  });
}

async function migrateUnlocked(config: Config, database: Database): Promise<string[]> {
  // The rateLimit table is always created, so AUTH_RATE_LIMIT_STORAGE can be switched freely.
  const schemaConfig: Config = { ...config, rateLimit: { ...config.rateLimit, storage: "database" } };
  const { toBeCreated, toBeAdded, runMigrations } = await getMigrations(authOptions(schemaConfig, database) as never);
  const changes = [
    ...toBeCreated.map((t) => `create table ${t.table}`),
    ...toBeAdded.map((t) => `add columns to ${t.table}: ${Object.keys(t.fields).join(", ")}`),
  ];
  await runMigrations();
  await sql`create table if not exists ${sql.table(THROTTLE_TABLE)} (
    key text primary key,
    failures integer not null,
    last_failure bigint not null
  )`.execute(database.db);
  await migrateAccountEvents(database.db);
  await migrateTotpClaims(database.db);
  // Replaced by the account events (the feed and the `iat` of new tokens read those).
  await sql`drop table if exists auth_membership_changes`.execute(database.db);
  return changes;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    const config = loadConfig();
    const database = createDatabase(config);
    const changes = await migrate(config, database);
    console.log(changes.length ? `migrated: ${changes.join("; ")}` : "schema up to date");
    await database.close();
  } catch (err) {
    console.error(err instanceof ConfigError ? `auth-service: ${err.message}` : err);
    process.exit(1);
  }
}
