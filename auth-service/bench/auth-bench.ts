// npm run bench [-- --n 60 --seconds 5 --concurrency 8] [-- --report FILE]
// Starts the service in-process (PGlite in a temp dir, or BENCH_DATABASE_URL) on a free loopback
// port with rate limits raised, then measures sign-up / login latency (sequential requests) and
// JWKS / token throughput (concurrent clients, bounded by count and time). Baseline, same run:
// one password hash alone (argon2id, the current hasher; scrypt, the former one), timed before
// the service starts.
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { startInbox } from "../test/mail-support.js";
import { hashPassword } from "../src/password-hashing.js";
import { startServer } from "../src/service.js";
import { numberArg, Report, reportPath } from "./report.js";

const N = numberArg("n", Number(process.env.BENCH_N ?? 60));
const SECONDS = numberArg("seconds", Number(process.env.BENCH_SECONDS ?? 5));
const CONCURRENCY = numberArg("concurrency", Number(process.env.BENCH_CONCURRENCY ?? 8));
const HASHES = 10;
const MAX_REQUESTS = 100_000;

const tmpRoot = os.platform() === "linux" ? "/dev/shm" : os.tmpdir();
const dataDir = mkdtempSync(path.join(tmpRoot, "auth-bench-"));
// Production requires somewhere to send mail and the account-events token: a local SMTP
// server catches the mails (as in the tests) and the token is a throw-away one.
const inbox = await startInbox();
const config = loadConfig({
  AUTH_ENV: "production",
  SMTP_URL: inbox.smtpUrl,
  MAIL_FROM: "bench <no-reply@localhost>",
  ACCOUNT_EVENTS_TOKEN: "bench-events-" + "x".repeat(40),
  // Sign-in and token throughput, not the verification step: accounts may sign in at once.
  EMAIL_VERIFICATION: "optional",
  PORT: "0",
  HOST: "127.0.0.1",
  AUTH_DATA_DIR: dataDir,
  BETTER_AUTH_SECRET: "bench-secret-" + "x".repeat(40),
  BETTER_AUTH_URL: "http://localhost:3001",
  DATABASE_URL: process.env.BENCH_DATABASE_URL,
  AUTH_RATE_LIMIT_STORAGE: process.env.AUTH_RATE_LIMIT_STORAGE,
  AUTH_RATE_LIMIT_MAX: "100000000",
  AUTH_RATE_LIMIT_SIGNIN_MAX: "100000000",
});

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
function summary(ms: number[]) {
  const s = [...ms].sort((a, b) => a - b);
  return { n: s.length, p50: pct(s, 50), p95: pct(s, 95), mean: s.reduce((a, b) => a + b, 0) / s.length, max: s[s.length - 1]! };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  const json = await res.json();
  if (!res.ok) throw new Error(`${url} -> ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

async function latency(label: string, fn: (i: number) => Promise<unknown>) {
  const times: number[] = [];
  const cpu = process.cpuUsage();
  for (let i = 0; i < N; i++) {
    const t = performance.now();
    await fn(i);
    times.push(performance.now() - t);
  }
  return { label, ...summary(times), cpu: cpuMs(process.cpuUsage(cpu)) / N };
}

async function throughput(label: string, fn: () => Promise<Response>) {
  let count = 0;
  let errors = 0;
  const deadline = performance.now() + SECONDS * 1000;
  const start = performance.now();
  const cpu = process.cpuUsage();
  const worker = async () => {
    while (performance.now() < deadline && count + errors < MAX_REQUESTS) {
      const res = await fn();
      await res.arrayBuffer();
      if (res.ok) count++;
      else errors++;
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const secs = (performance.now() - start) / 1000;
  return { label, requests: count, errors, rps: count / secs, cpu: cpuMs(process.cpuUsage(cpu)) / Math.max(1, count + errors) };
}

// Baseline: one password hash alone, the current hasher and the former one (Better Auth's
// scrypt: N=16384, r=16, p=1, 64 bytes).
const { scrypt } = await import("node:crypto");
const scryptOnce = () => new Promise<void>((resolve, reject) => scrypt("bench password 123", "0123456789abcdef", 64, { N: 16384, r: 16, p: 1, maxmem: 128 * 16384 * 16 * 2 }, (e) => (e ? reject(e) : resolve())));
async function timedHashes(label: string, once: () => Promise<unknown>) {
  await once();
  const times: number[] = [];
  for (let i = 0; i < HASHES; i++) {
    const t = performance.now();
    await once();
    times.push(performance.now() - t);
  }
  return { label, ...summary(times) };
}
const baselines = [
  await timedHashes("(baseline) one argon2id hash alone, the current hasher", () => hashPassword("bench password 123")),
  await timedHashes("(baseline) one scrypt hash alone, Better Auth's former default", scryptOnce),
];
const report = new Report(`Auth-service: sign-up, sign-in, JWKS and tokens (${process.env.BENCH_DATABASE_URL ? "PostgreSQL" : "PGlite"})`, {
  baseline: `one password hash alone (argon2id, the current hasher, and scrypt, the former one), ${HASHES} of each, timed in the same process before the service starts`,
});

const service = await startServer(config);
const base = service.url;
const runId = Date.now().toString(36);
const email = (i: number) => `bench-${runId}-${i}@example.com`;
const PASSWORD = "bench password 123";
try {
  // Warm-up (JIT, first key generation, PGlite caches).
  for (let i = 0; i < 3; i++) await post(`${base}/auth/signup`, { email: `warm-${runId}-${i}@example.com`, password: PASSWORD, full_name: "Warm" });
  await fetch(`${base}/api/auth/jwks`);

  const lat = [
    await latency("POST /auth/signup (argon2id hash + session + JWT)", (i) => post(`${base}/auth/signup`, { email: email(i), password: PASSWORD, full_name: `Bench ${i}` })),
    await latency("POST /auth/login (argon2id verify + session + JWT)", (i) => post(`${base}/auth/login`, { email: email(i), password: PASSWORD })),
    await latency("POST /api/auth/sign-in/email (Better Auth route)", (i) =>
      post(`${base}/api/auth/sign-in/email`, { email: email(i), password: PASSWORD }, { origin: "http://localhost:3001" }),
    ),
  ];
  const { session_token } = await post(`${base}/auth/login`, { email: email(0), password: PASSWORD });
  const thr = [
    await throughput("GET /api/auth/jwks", () => fetch(`${base}/api/auth/jwks`)),
    await throughput("GET /api/auth/token (bearer session -> JWT)", () => fetch(`${base}/api/auth/token`, { headers: { authorization: `Bearer ${session_token}` } })),
  ];

  const f = (x: number) => Math.round(x * 10) / 10;
  report.text(`Database: ${service.database.kind}; rate-limit counters: ${config.rateLimit.storage}; the service and its HTTP client share this process.`);
  report.table(
    ["request", "n", "p50 ms", "p95 ms", "mean ms", "max ms", "CPU ms/request"],
    [
      ...lat.map((r) => [r.label, r.n, f(r.p50), f(r.p95), f(r.mean), f(r.max), f(r.cpu)]),
      ...baselines.map((r) => [r.label, r.n, f(r.p50), f(r.p95), f(r.mean), f(r.max), ""]),
    ],
    `Latency, ${N} sequential requests each`,
  );
  report.table(
    ["request", "requests", "errors", "req/s", "CPU ms/request"],
    thr.map((r) => [r.label, r.requests, r.errors, f(r.rps), f(r.cpu)]),
    `Throughput, ${CONCURRENCY} concurrent clients for ${SECONDS} s`,
  );
  const login = lat[1]!;
  const argon = baselines[0]!;
  report.text(
    `How to read it: a sign-up or a login is one password hash plus a session row, a JWT and HTTP. ` +
      `Here a login's p50 is ${f(login.p50)} ms, of which one argon2id hash alone takes ${f(argon.p50)} ms: ` +
      `the rest of the request costs ${f(login.p50 - argon.p50)} ms. CPU ms/request is this process's CPU time ` +
      `(server and client together; the hashes run on libuv's threads and are included) divided by the requests, ` +
      `which does not depend on what else the machine runs. JWKS and token minting do no password work; ` +
      `verifiers cache the JWKS, so its rate only matters at their start.`,
  );
  report.write(reportPath());
} finally {
  await service.close();
  await inbox.close();
  rmSync(dataDir, { recursive: true, force: true });
}
