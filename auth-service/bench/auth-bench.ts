// npm run bench [-- --write FILE]   (the figures are kept in docs/benchmarks.md)
// Starts the service in-process (PGlite in a temp dir, or BENCH_DATABASE_URL) on a free loopback
// port with rate limits raised, then measures sign-up / login latency (sequential requests) and
// JWKS / token throughput (concurrent clients, bounded by count and time).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { startServer } from "../src/service.js";

const N = Number(process.env.BENCH_N ?? 60);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const MAX_REQUESTS = 100_000;
const writeIdx = process.argv.indexOf("--write");
const writePath = writeIdx > 0 ? process.argv[writeIdx + 1] : undefined;

const tmpRoot = os.platform() === "linux" ? "/dev/shm" : os.tmpdir();
const dataDir = mkdtempSync(path.join(tmpRoot, "auth-bench-"));
const config = loadConfig({
  AUTH_ENV: "production",
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

// Baseline: one scrypt hash with Better Auth's parameters (N=16384, r=16, p=1, 64 bytes).
const { scrypt } = await import("node:crypto");
const scryptOnce = () => new Promise<void>((resolve, reject) => scrypt("bench password 123", "0123456789abcdef", 64, { N: 16384, r: 16, p: 1, maxmem: 128 * 16384 * 16 * 2 }, (e) => (e ? reject(e) : resolve())));
await scryptOnce();
const scryptTimes: number[] = [];
for (let i = 0; i < 10; i++) {
  const t = performance.now();
  await scryptOnce();
  scryptTimes.push(performance.now() - t);
}

const service = await startServer(config);
const base = service.url;
const runId = Date.now().toString(36);
const email = (i: number) => `bench-${runId}-${i}@example.com`;
const PASSWORD = "bench password 123";
const load = os.loadavg().map((l) => l.toFixed(1)).join(" / ");
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

  const f = (x: number) => x.toFixed(1);
  const lines = [
    `Database: ${service.database.kind}; Node ${process.version}; ${os.cpus().length} cores; load average before the run (1/5/15 min): ${load}.`,
    "",
    `Latency, ${N} sequential requests each (ms):`,
    "",
    "| request | n | p50 | p95 | mean | max | CPU ms/request |",
    "|---|---|---|---|---|---|---|",
    ...lat.map((r) => `| ${r.label} | ${r.n} | ${f(r.p50)} | ${f(r.p95)} | ${f(r.mean)} | ${f(r.max)} | ${f(r.cpu)} |`),
    `| (baseline) one scrypt hash, Better Auth's former default | 10 | ${f(summary(scryptTimes).p50)} | ${f(summary(scryptTimes).p95)} | ${f(summary(scryptTimes).mean)} | ${f(summary(scryptTimes).max)} | |`,
    "",
    `Throughput, ${CONCURRENCY} concurrent clients for ${SECONDS} s:`,
    "",
    "| request | requests | errors | req/s | CPU ms/request |",
    "|---|---|---|---|---|",
    ...thr.map((r) => `| ${r.label} | ${r.requests} | ${r.errors} | ${f(r.rps)} | ${f(r.cpu)} |`),
    "",
    "CPU ms/request: this process's CPU time (server and the in-process HTTP client together; argon2id runs on libuv threads and is included) divided by the requests.",
    `Rate-limit storage: ${config.rateLimit.storage}.`,
  ];
  console.log(lines.join("\n"));
  if (writePath) {
    writeFileSync(writePath, lines.join("\n") + "\n");
    console.log(`\nwritten to ${writePath}`);
  }
} finally {
  await service.close();
  rmSync(dataDir, { recursive: true, force: true });
}
