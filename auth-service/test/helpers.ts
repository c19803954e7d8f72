// Test harness: a real service (real Better Auth, real database) on a free loopback port.
// TEST_DATABASE=pglite (temp dir) | postgres (fresh database on the local server).
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { TestContext } from "node:test";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { loadConfig } from "../src/config.js";
import type { InvitationSender } from "../src/organizations.js";
import { startServer, type RunningService } from "../src/service.js";

export const DB_KIND = (process.env.TEST_DATABASE ?? "pglite") as "pglite" | "postgres";
// TEST_POSTGRES_URL is set by `make test` (scripts/test_postgres.py: the system server, or an
// embedded one when none answers on 5432); run directly, the local server on 5432.
const PG_ADMIN_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
// One database per test file, so files can run in parallel.
const FILE_TAG = path.basename(process.argv[1] ?? "main").replace(/\.test\.ts$/, "").replace(/[^a-z0-9]/gi, "_").toLowerCase();
// Unique per run (other checkouts may run the suite on the same server at the same time).
const PG_TEST_DB = `auth_service_test_${FILE_TAG}_${process.pid}_${Date.now().toString(36)}`;
export const TEST_SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";
export const BASE_URL = "http://localhost:3001";
/** ACCOUNT_EVENTS_TOKEN of every test service (the bearer of GET /auth/events). */
export const EVENTS_TOKEN = "test-events-token-0123456789-abcdefghijklmnop";

let databases = 0;
let services = 0;

/** Creates a fresh, uniquely named test database; returns its URL. */
export async function freshPostgresDatabase(name = `${PG_TEST_DB}_${databases++}`): Promise<string> {
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Drops a database made by freshPostgresDatabase (after every pool on it is closed). */
export async function dropPostgresDatabase(url: string): Promise<void> {
  const name = new URL(url).pathname.slice(1);
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    // FORCE: the name is this run's own, so only its own leftover connections go.
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/** Temp dirs live on tmpfs when there is one: PGlite on a slow disk makes the suite crawl. */
const TMP_ROOT = process.env.TEST_TMPDIR ?? (existsSync("/dev/shm") ? "/dev/shm" : tmpdir());

export function tempDir(prefix = "auth-test-"): string {
  return mkdtempSync(path.join(TMP_ROOT, prefix));
}

/**
 * PGlite's initdb takes ~8 s on 2 cores; an initialised (empty, un-migrated) data directory is
 * made once per PGlite version and copied into each test's temp dir. Migrations still run.
 */
async function seedPglite(dataDir: string): Promise<void> {
  const pkg = new URL("../node_modules/@electric-sql/pglite/package.json", import.meta.url);
  const version = JSON.parse(readFileSync(pkg, "utf8")).version as string;
  const template = path.join(TMP_ROOT, `auth-service-pglite-template-${version}`);
  if (!existsSync(path.join(template, "PG_VERSION"))) {
    const building = `${template}.${process.pid}`;
    const db = new PGlite(building);
    await db.query("select 1");
    await db.close();
    try {
      renameSync(building, template);
    } catch {
      rmSync(building, { recursive: true, force: true }); // another process won the race
    }
  }
  cpSync(template, path.join(dataDir, "auth-pg"), { recursive: true });
}

/** A temp data dir (PGlite seeded) or, for TEST_DATABASE=postgres, a fresh database. */
export async function prepareStorage(): Promise<{ dataDir: string; databaseUrl?: string }> {
  const dataDir = tempDir();
  if (DB_KIND === "postgres") return { dataDir, databaseUrl: await freshPostgresDatabase() };
  await seedPglite(dataDir);
  return { dataDir };
}

export interface TestService extends RunningService {
  dataDir: string;
  /** Stops the service and removes its temp dir (unless keepData: to restart on it). */
  stop(opts?: { keepData?: boolean }): Promise<void>;
}

/**
 * Starts the service. `env` overrides the defaults below. Pass `reuse` (a previous service's
 * dataDir and DATABASE_URL) to restart on the same storage, or `share` (a running service) to
 * run a second instance, with its own configuration, on the same open database; `sendInvitation`
 * replaces the default invitation sender (a log line).
 */
export async function startTestService(
  env: Record<string, string | undefined> = {},
  reuse?: { dataDir: string; databaseUrl?: string },
  share?: RunningService,
  sendInvitation?: InvitationSender,
): Promise<TestService> {
  if (share) reuse = { dataDir: (share.config.dataDir), databaseUrl: share.config.databaseUrl };
  const dataDir = reuse?.dataDir ?? tempDir();
  const databaseUrl = reuse ? reuse.databaseUrl : DB_KIND === "postgres" ? await freshPostgresDatabase() : undefined;
  if (!reuse && !databaseUrl && !env.DATABASE_URL) await seedPglite(dataDir);
  const config = loadConfig({
    AUTH_ENV: "test",
    PORT: "0",
    HOST: "127.0.0.1",
    AUTH_DATA_DIR: dataDir,
    BETTER_AUTH_SECRET: TEST_SECRET,
    BETTER_AUTH_URL: BASE_URL,
    DATABASE_URL: databaseUrl,
    AUTH_RATE_LIMIT_MAX: "10000",
    AUTH_RATE_LIMIT_SIGNIN_MAX: "10000",
    AUTH_RATE_LIMIT_MAIL_MAX: "10000",
    MAIL_PER_ADDRESS_MAX: "10000",
    // Counters of this service only: runs sharing a Redis never see each other's.
    REDIS_KEY_PREFIX: `auth-service-test:${PG_TEST_DB}_${services++}:rl:`,
    ACCOUNT_EVENTS_TOKEN: EVENTS_TOKEN,
    // No access log, also for the tests that run as AUTH_ENV=development (errors.test.ts turns it on).
    LOG_LEVEL: "warn",
    ...env,
  });
  const service = await startServer(config, { database: share?.database, sendInvitation });
  return {
    ...service,
    dataDir,
    async stop(opts) {
      await service.close();
      if (!reuse && !opts?.keepData) {
        rmSync(dataDir, { recursive: true, force: true });
        if (databaseUrl) await dropPostgresDatabase(databaseUrl);
      }
    },
  };
}

export interface JsonResponse<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

export async function request<T = any>(
  base: string,
  method: string,
  urlPath: string,
  opts: { json?: unknown; body?: string; token?: string; headers?: Record<string, string> } = {},
): Promise<JsonResponse<T>> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined = opts.body;
  if (opts.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (body !== undefined) headers["content-type"] ??= "application/json";
  const res = await fetch(base + urlPath, { method, headers, body });
  const text = await res.text();
  let parsed: any = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {}
  return { status: res.status, headers: res.headers, body: parsed };
}

let counter = 0;
export function uniqueEmail(tag = "user"): string {
  return `${tag}-${process.pid}-${Date.now()}-${counter++}@example.com`;
}

export const PASSWORD = "correct horse battery";

const IN_CI = ["1", "true", "yes"].includes((process.env.CI ?? "").toLowerCase());

/**
 * True when Redis answers at `url`. When it does not, the test is skipped with the reason
 * locally and fails under CI=true, so a CI run can never pass by skipping.
 */
export async function redisAnswers(t: TestContext, url: string): Promise<boolean> {
  const reachable = await new Promise<boolean>((resolve) => {
    const u = new URL(url);
    const sock = net.connect(Number(u.port || 6379), u.hostname, () => (sock.destroy(), resolve(true)));
    sock.on("error", () => resolve(false));
  });
  if (reachable) return true;
  assert.ok(!IN_CI, `no Redis at ${url} (CI=true: a missing service fails the run)`);
  t.skip(`no Redis at ${url}`);
  return false;
}
