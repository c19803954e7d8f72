// Schema migrations through Better Auth's own migrator (user, session, account, verification,
// jwks, rateLimit). `npm run migrate` runs them without starting the server.
import { getMigrations } from "better-auth/db/migration";
import { authOptions } from "./auth.js";
import { ConfigError, loadConfig, type Config } from "./config.js";
import { createDatabase, type Database } from "./db.js";

export async function migrate(config: Config, database: Database): Promise<string[]> {
  // The rateLimit table is always created, so AUTH_RATE_LIMIT_STORAGE can be switched freely.
  const schemaConfig: Config = { ...config, rateLimit: { ...config.rateLimit, storage: "database" } };
  const { toBeCreated, toBeAdded, runMigrations } = await getMigrations(authOptions(schemaConfig, database) as never);
  const changes = [
    ...toBeCreated.map((t) => `create table ${t.table}`),
    ...toBeAdded.map((t) => `add columns to ${t.table}: ${Object.keys(t.fields).join(", ")}`),
  ];
  await runMigrations();
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
