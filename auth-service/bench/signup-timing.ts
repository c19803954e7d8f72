// npx tsx bench/signup-timing.ts
// Sign-up latency for a new email vs an existing one (the enumeration side channel): sequential
// requests, PGlite in a temp dir (or BENCH_DATABASE_URL), rate limits raised. Baseline on main
// before the fix (duplicate answered before hashing): 13 ms vs 308 ms (issue 12).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { startServer } from "../src/service.js";

const N = Number(process.env.BENCH_N ?? 15);
const dataDir = mkdtempSync(path.join(os.platform() === "linux" ? "/dev/shm" : os.tmpdir(), "auth-signup-bench-"));
const config = loadConfig({
  AUTH_ENV: "production",
  PORT: "0",
  HOST: "127.0.0.1",
  AUTH_DATA_DIR: dataDir,
  BETTER_AUTH_SECRET: "bench-secret-" + "x".repeat(40),
  BETTER_AUTH_URL: "http://localhost:3001",
  DATABASE_URL: process.env.BENCH_DATABASE_URL,
  AUTH_RATE_LIMIT_MAX: "100000000",
  AUTH_RATE_LIMIT_SIGNIN_MAX: "100000000",
});
const service = await startServer(config);
const signUp = async (email: string) => {
  const t0 = performance.now();
  const res = await fetch(`${service.url}/auth/signup`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email, password: "correct horse battery", full_name: "Bench" }),
  });
  await res.arrayBuffer();
  return { ms: performance.now() - t0, status: res.status };
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
try {
  const taken = `taken-${Date.now()}@example.com`;
  await signUp(taken);
  const fresh: number[] = [];
  const existing: number[] = [];
  for (let i = 0; i < N; i++) {
    const a = await signUp(`new-${Date.now()}-${i}@example.com`);
    const b = await signUp(taken);
    if (a.status !== 201 || b.status !== 409) throw new Error(`unexpected statuses ${a.status} / ${b.status}`);
    fresh.push(a.ms);
    existing.push(b.ms);
  }
  console.log(`sign-up, median of ${N} (${service.database.kind}): new email ${median(fresh).toFixed(0)} ms (201), existing email ${median(existing).toFixed(0)} ms (409); baseline on main 308 ms vs 13 ms`);
} finally {
  await service.close();
  rmSync(dataDir, { recursive: true, force: true });
}
