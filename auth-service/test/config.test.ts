// Secret handling and start-up: production refuses a missing/weak secret (and the process exits
// non-zero); dev mode generates one, stores it 0600, and sessions + signing keys survive a restart.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { decodeProtectedHeader } from "jose";
import { ConfigError, loadConfig } from "../src/config.js";
import { dropPostgresDatabase, PASSWORD, prepareStorage, request, startTestService, tempDir, uniqueEmail } from "./helpers.js";

const SERVICE_DIR = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), "..");

test("production refuses a missing or weak BETTER_AUTH_SECRET", () => {
  const dir = tempDir();
  try {
    assert.throws(() => loadConfig({ AUTH_ENV: "production", AUTH_DATA_DIR: dir }), (e: Error) => e instanceof ConfigError && /BETTER_AUTH_SECRET is not set/.test(e.message));
    assert.throws(() => loadConfig({ NODE_ENV: "production", AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: "short-secret" }), (e: Error) => e instanceof ConfigError && /too weak/.test(e.message));
    assert.throws(() => loadConfig({ AUTH_ENV: "production", AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: "a".repeat(31) }), ConfigError);
    const mail = { SMTP_URL: "smtp://mail.example:587", MAIL_FROM: "no-reply@example.com" };
    const ok = loadConfig({ AUTH_ENV: "production", AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: "s".repeat(32), ACCOUNT_EVENTS_TOKEN: "e".repeat(32), ...mail });
    assert.equal(ok.devMode, false);
    assert.equal(existsSync(path.join(dir, "auth-secret")), false, "production never writes a secret file");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("ACCOUNT_EVENTS_TOKEN: required in production, 32+ characters whenever set; retention in days", () => {
  const dir = tempDir();
  try {
    const production = { AUTH_ENV: "production", AUTH_DATA_DIR: dir, BETTER_AUTH_SECRET: "s".repeat(32), SMTP_URL: "smtp://mail.example:587", MAIL_FROM: "no-reply@example.com" };
    assert.throws(() => loadConfig(production), (e: Error) => e instanceof ConfigError && /ACCOUNT_EVENTS_TOKEN is not set/.test(e.message));
    assert.throws(() => loadConfig({ ...production, ACCOUNT_EVENTS_TOKEN: "e".repeat(31) }), (e: Error) => e instanceof ConfigError && /too short/.test(e.message));
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, ACCOUNT_EVENTS_TOKEN: "short" }), ConfigError, "development too");
    assert.equal(loadConfig({ ...production, ACCOUNT_EVENTS_TOKEN: "e".repeat(32) }).accountEvents.token, "e".repeat(32));
    const dev = loadConfig({ AUTH_DATA_DIR: dir });
    assert.deepEqual(dev.accountEvents, { token: undefined, retentionDays: 30 }, "development: the feed answers nobody until it is set");
    assert.equal(loadConfig({ AUTH_DATA_DIR: dir, ACCOUNT_EVENTS_RETENTION_DAYS: "7" }).accountEvents.retentionDays, 7);
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, ACCOUNT_EVENTS_RETENTION_DAYS: "-1" }), ConfigError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("configuration defaults and parsing", () => {
  const dir = tempDir();
  try {
    const c = loadConfig({ AUTH_DATA_DIR: dir });
    assert.equal(c.env, "development");
    assert.equal(c.port, 3001);
    assert.equal(c.host, "127.0.0.1");
    assert.equal(c.baseURL, "http://localhost:3001");
    assert.deepEqual(c.jwt, { issuer: "http://localhost:3001", audience: "rag-service", expiresIn: "15m", lifetimeSeconds: 900 });
    // The token lifetime in seconds.
    for (const [raw, seconds] of [["30s", 30], ["1h", 3600], ["2 days", 172_800], ["10 mins", 600], ["1w", 604_800]] as const) {
      assert.equal(loadConfig({ AUTH_DATA_DIR: dir, JWT_EXPIRES_IN: raw }).jwt.lifetimeSeconds, seconds, raw);
    }
    for (const raw of ["900", "15x", "0m", "-5m", "1.5h"]) {
      assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, JWT_EXPIRES_IN: raw }), ConfigError, raw);
    }
    assert.equal(c.databaseUrl, undefined);
    assert.equal(c.rateLimit.enabled, true);
    assert.equal(c.rateLimit.storage, "memory", "embedded PGlite: one process, counters in memory");
    assert.equal(loadConfig({ AUTH_DATA_DIR: dir, DATABASE_URL: "postgres://x@h/db" }).rateLimit.storage, "database");
    assert.equal(loadConfig({ AUTH_DATA_DIR: dir, AUTH_RATE_LIMIT_STORAGE: "database" }).rateLimit.storage, "database");
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, AUTH_RATE_LIMIT_STORAGE: "disk" }), ConfigError);
    const d = loadConfig({ AUTH_DATA_DIR: dir, PORT: "4000", TRUSTED_ORIGINS: "http://a.test, http://b.test", AUTH_RATE_LIMIT_ENABLED: "false" });
    assert.equal(d.baseURL, "http://localhost:4000");
    assert.deepEqual(d.trustedOrigins, ["http://a.test", "http://b.test"]);
    assert.equal(d.rateLimit.enabled, false);
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, PORT: "abc" }), ConfigError);
    assert.throws(() => loadConfig({ AUTH_DATA_DIR: dir, AUTH_ENV: "staging" }), ConfigError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function runServer(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/server.ts"], {
      cwd: SERVICE_DIR,
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

test("the passkeys' relying party comes from TRUSTED_ORIGINS (or PASSKEY_RP_ID), and covers only origins under it", () => {
  const dir = tempDir();
  try {
    const rp = (env: Record<string, string>) => loadConfig({ AUTH_DATA_DIR: dir, ...env }).passkey;
    assert.deepEqual(rp({}), { rpId: "localhost", origins: ["http://localhost:3001"] });
    assert.deepEqual(rp({ TRUSTED_ORIGINS: "https://app.example.com, https://admin.example.com" }), { rpId: "app.example.com", origins: ["https://app.example.com"] });
    assert.deepEqual(rp({ TRUSTED_ORIGINS: "https://app.example.com,https://admin.example.com,https://other.test", PASSKEY_RP_ID: "Example.com" }), {
      rpId: "example.com",
      origins: ["https://app.example.com", "https://admin.example.com"],
    });
    // A suffix that is not a parent domain ("ample.com") covers nothing.
    assert.throws(() => rp({ TRUSTED_ORIGINS: "https://app.example.com", PASSKEY_RP_ID: "ample.com" }), ConfigError);
    assert.throws(() => rp({ TRUSTED_ORIGINS: "not a url" }), ConfigError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the server process exits non-zero with a clear message on a missing or weak secret in production", async () => {
  const dir = tempDir();
  try {
    const missing = await runServer({ AUTH_ENV: "production", AUTH_DATA_DIR: dir, PORT: "0" });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /refusing to start: BETTER_AUTH_SECRET is not set/);
    const weak = await runServer({ NODE_ENV: "production", AUTH_DATA_DIR: dir, PORT: "0", BETTER_AUTH_SECRET: "changeme" });
    assert.equal(weak.code, 1);
    assert.match(weak.stderr, /BETTER_AUTH_SECRET is too weak \(8 characters, at least 32 required\)/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("npm start: migrates, prints the listening line, serves, and exits 0 on SIGTERM", async () => {
  const { dataDir, databaseUrl } = await prepareStorage();
  const child = spawn(process.execPath, ["--import", "tsx", "src/server.ts"], {
    cwd: SERVICE_DIR,
    env: { PATH: process.env.PATH ?? "", AUTH_ENV: "development", PORT: "0", AUTH_DATA_DIR: dataDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  try {
    let out = "";
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line in 60 s:\n${out}`)), 60_000);
      child.stdout.on("data", (d) => {
        out += d;
        const m = out.match(/auth-service listening on (http:\/\/127\.0\.0\.1:\d+)/);
        if (m) (clearTimeout(timer), resolve(m[1]!));
      });
      child.on("exit", (code) => reject(new Error(`exited ${code}: ${out}`)));
    });
    assert.deepEqual((await request(url, "GET", "/health")).body, { status: "ok", services: { database: true } });
    assert.equal((await request(url, "GET", "/api/auth/jwks")).status, 200);
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
    child.kill("SIGTERM");
    assert.equal(await exited, 0);
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
    if (databaseUrl) await dropPostgresDatabase(databaseUrl);
  }
});

test("dev mode generates a secret (0600), reuses it, and sessions and keys survive a restart", async () => {
  const first = await startTestService({ AUTH_ENV: "development", BETTER_AUTH_SECRET: undefined });
  const secretFile = path.join(first.dataDir, "auth-secret");
  let second: Awaited<ReturnType<typeof startTestService>> | undefined;
  try {
    assert.ok(existsSync(secretFile));
    assert.equal(statSync(secretFile).mode & 0o777, 0o600);
    const secret = readFileSync(secretFile, "utf8").trim();
    assert.ok(secret.length >= 32);
    assert.equal(first.config.secret, secret);

    const signup = await request(first.url, "POST", "/auth/signup", { json: { email: uniqueEmail("restart"), password: PASSWORD, full_name: "Re Start" } });
    assert.equal(signup.status, 201);
    const kid = decodeProtectedHeader(signup.body.access_token).kid;
    await first.stop({ keepData: true });

    second = await startTestService({ AUTH_ENV: "development", BETTER_AUTH_SECRET: undefined }, { dataDir: first.dataDir, databaseUrl: first.config.databaseUrl });
    assert.equal(second.config.secret, secret, "the stored secret is reused");
    const me = await request(second.url, "GET", "/auth/me", { token: signup.body.session_token });
    assert.equal(me.status, 200, "the session survived the restart");
    assert.equal(me.body.id, signup.body.user.id);
    const token = await request(second.url, "POST", "/auth/token", { token: signup.body.session_token });
    assert.equal(token.status, 200, "the encrypted signing key still decrypts");
    assert.equal(decodeProtectedHeader(token.body.access_token).kid, kid);
  } finally {
    await second?.stop();
    rmSync(first.dataDir, { recursive: true, force: true });
    if (first.config.databaseUrl) await dropPostgresDatabase(first.config.databaseUrl);
  }
});

test(".env.example lists every variable the configuration reads, and the defaults it shows are the defaults", () => {
  const example = readFileSync(path.join(SERVICE_DIR, "..", ".env.example"), "utf8");
  // Its auth-service section: "# NAME=value" lines, up to the next "# ---- name" header.
  const section = example.split(/^# -+ /m).find((part) => part.startsWith("auth-service")) ?? "";
  const documented = new Map([...section.matchAll(/^# ([A-Z][A-Z0-9_]*)=(\S*)/gm)].map((m) => [m[1], m[2]]));
  const source = readFileSync(path.join(SERVICE_DIR, "src", "config.ts"), "utf8");
  const read = new Set([...source.matchAll(/env\.([A-Z][A-Z0-9_]*)|int\(env, "([A-Z][A-Z0-9_]*)"/g)].map((m) => m[1] ?? m[2]));
  const composeOnly = new Set(["AUTH_PUBLIC_URL"]);
  assert.deepEqual([...read].filter((name) => !documented.has(name)), [], "read by src/config.ts, missing from .env.example");
  assert.deepEqual([...documented.keys()].filter((name) => !read.has(name) && !composeOnly.has(name)), [], "in .env.example, never read");

  // A given secret: loadConfig then writes nothing (the data dir is only resolved).
  const base = { BETTER_AUTH_SECRET: "s".repeat(32) };
  const defaults = loadConfig(base);
  for (const [name, value] of documented) {
    if (composeOnly.has(name) || value === "") continue;
    assert.deepEqual(loadConfig({ ...base, [name]: value }), defaults, `.env.example shows ${name}=${value}, not the default`);
  }
});

test("OAUTH_RESOURCES: absolute http(s) URLs without a fragment; registration can be turned off", () => {
  const base = { BETTER_AUTH_SECRET: "s".repeat(32) };
  assert.deepEqual(loadConfig(base).oauth, {
    resources: ["http://localhost:8000", "http://localhost:8000/mcp"],
    registration: true,
    refreshTokenLifetimeSeconds: 2_592_000,
  });
  assert.deepEqual(loadConfig({ ...base, OAUTH_RESOURCES: " https://rag.example.com , https://rag.example.com/mcp" }).oauth.resources,
    ["https://rag.example.com", "https://rag.example.com/mcp"]);
  for (const bad of ["rag.example.com/mcp", "ftp://rag.example.com", "https://rag.example.com/mcp#x", "javascript:alert(1)"]) {
    assert.throws(() => loadConfig({ ...base, OAUTH_RESOURCES: bad }), (e: Error) => e instanceof ConfigError && /OAUTH_RESOURCES/.test(e.message), bad);
  }
  assert.equal(loadConfig({ ...base, OAUTH_DYNAMIC_REGISTRATION: "false" }).oauth.registration, false);
});
