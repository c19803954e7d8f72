// npm run rotate-key -- <status|stage|activate [kid]|prune>
// Uses the same configuration as the server (DATABASE_URL / AUTH_DATA_DIR, BETTER_AUTH_SECRET).
// With the embedded PGlite database, stop the service first (PGlite is single-process).
import { activateKey, listKeys, pruneKeys, stageKey } from "./keys.js";
import { createAuth } from "./auth.js";
import { ConfigError, loadConfig } from "./config.js";
import { createDatabase } from "./db.js";
import { migrate } from "./migrate.js";

const [command = "status", arg] = process.argv.slice(2);
try {
  const config = loadConfig();
  const database = createDatabase(config);
  await migrate(config, database);
  const auth = createAuth(config, database);
  if (command === "stage") {
    const kid = await stageKey(auth);
    const state = (await listKeys(auth)).find((k) => k.kid === kid)?.state;
    if (state === "signing") {
      console.log(`there was no live key: ${kid} is now the signing key.`);
    } else {
      console.log(`staged key ${kid}: published in the JWKS, not signing yet.`);
      console.log("Wait until verifiers have refreshed their JWKS cache, then run: npm run rotate-key -- activate");
    }
  } else if (command === "activate") {
    const { activated, retired } = await activateKey(auth, arg);
    console.log(`key ${activated} now signs; retired (still published for the grace period): ${retired.join(", ") || "none"}`);
  } else if (command === "prune") {
    const removed = await pruneKeys(auth);
    console.log(`removed ${removed.length} expired key(s)${removed.length ? `: ${removed.join(", ")}` : ""}`);
  } else if (command !== "status") {
    throw new ConfigError(`unknown command "${command}" (use status, stage, activate [kid], prune)`);
  }
  const keys = await listKeys(auth);
  if (keys.length === 0) console.log("no signing key yet (Better Auth creates one on the first token or JWKS request)");
  for (const k of keys) {
    console.log(`${k.kid}  ${k.state.padEnd(8)} created ${k.createdAt.toISOString()}${k.expiresAt ? `  retired ${k.expiresAt.toISOString()}` : ""}`);
  }
  await database.close();
} catch (err) {
  console.error(`rotate-key: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
