// Replica-safe start-up: three auth-service processes started at once on one fresh Postgres
// database all migrate (one after the other, under the advisory lock) and come up healthy.
// Always on Postgres, whatever TEST_DATABASE says: PGlite cannot be shared by processes.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadConfig } from "../src/config.js";
import { createDatabase } from "../src/db.js";
import { migrate } from "../src/migrate.js";
import { dropPostgresDatabase, freshPostgresDatabase, request, TEST_SECRET, tempDir } from "./helpers.js";

const SERVICE_DIR = fileURLToPath(new URL("..", import.meta.url));
const REPLICAS = 3;

function start(databaseUrl: string, dataDir: string): { child: ChildProcess; url: Promise<string> } {
  const child = spawn(process.execPath, ["--import", "tsx", "src/server.ts"], {
    cwd: SERVICE_DIR,
    env: { PATH: process.env.PATH ?? "", AUTH_ENV: "development", PORT: "0", AUTH_DATA_DIR: dataDir, DATABASE_URL: databaseUrl, BETTER_AUTH_SECRET: TEST_SECRET },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const url = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line in 120 s:\n${out}`)), 120_000);
    const read = (d: Buffer) => {
      out += d;
      const m = out.match(/auth-service listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) (clearTimeout(timer), resolve(m[1]!));
    };
    child.stdout!.on("data", read);
    child.stderr!.on("data", read);
    child.on("exit", (code) => (clearTimeout(timer), reject(new Error(`a replica exited ${code} during start-up:\n${out}`))));
  });
  return { child, url };
}

test(`${REPLICAS} replicas starting together on one fresh Postgres database all come up healthy`, async () => {
  const databaseUrl = await freshPostgresDatabase(`auth_service_replicas_${process.pid}_${Date.now().toString(36)}`);
  const dataDir = tempDir("auth-replicas-");
  const replicas = Array.from({ length: REPLICAS }, () => start(databaseUrl, dataDir));
  try {
    const urls = await Promise.all(replicas.map((r) => r.url));
    for (const url of urls) {
      const health = await request(url, "GET", "/health");
      assert.equal(health.status, 200, JSON.stringify(health.body));
      assert.equal(health.body.status, "ok");
    }
    // They share one schema: a user made through one replica signs in through another.
    const email = `replica-${process.pid}@example.com`;
    const password = "correct horse battery";
    assert.equal((await request(urls[0]!, "POST", "/auth/signup", { json: { email, password, full_name: "R" } })).status, 201);
    assert.equal((await request(urls[2]!, "POST", "/auth/login", { json: { email, password } })).status, 200);
  } finally {
    await Promise.all(
      replicas.map(({ child }) => {
        if (child.exitCode !== null) return;
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        return exited;
      }),
    );
    rmSync(dataDir, { recursive: true, force: true });
    await dropPostgresDatabase(databaseUrl);
  }
});

test("migrations racing in one process on separate pools: all succeed, the schema is made once", async () => {
  const databaseUrl = await freshPostgresDatabase(`auth_service_migrate_race_${process.pid}_${Date.now().toString(36)}`);
  const config = loadConfig({ AUTH_ENV: "test", AUTH_DATA_DIR: "/nonexistent-unused", BETTER_AUTH_SECRET: TEST_SECRET, DATABASE_URL: databaseUrl });
  const databases = Array.from({ length: REPLICAS }, () => createDatabase(config));
  try {
    const results = await Promise.allSettled(databases.map((db) => migrate(config, db)));
    const failures = results.filter((r) => r.status === "rejected").map((r) => String((r as PromiseRejectedResult).reason));
    assert.deepEqual(failures, []);
    const changed = results.map((r) => (r as PromiseFulfilledResult<string[]>).value.length);
    assert.equal(changed.filter((n) => n > 0).length, 1, `exactly one run creates the tables: ${changed}`);
  } finally {
    await Promise.all(databases.map((db) => db.close()));
    await dropPostgresDatabase(databaseUrl);
  }
});
