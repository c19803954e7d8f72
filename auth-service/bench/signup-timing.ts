// npm run bench:signup [-- --n 15] [-- --report FILE]
// Sign-up latency for a new email vs an existing one (the enumeration side channel, issue 12):
// sequential requests, alternating, PGlite in a temp dir (or BENCH_DATABASE_URL), rate limits
// raised. The new email is the baseline: an existing one must take as long (it hashes too).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { loadConfig } from "../src/config.js";
import { startInbox } from "../test/mail-support.js";
import { startServer } from "../src/service.js";
import { numberArg, Report, reportPath } from "./report.js";

const N = numberArg("n", Number(process.env.BENCH_N ?? 15));
const dataDir = mkdtempSync(path.join(os.platform() === "linux" ? "/dev/shm" : os.tmpdir(), "auth-signup-bench-"));
// Production requires somewhere to send mail and the account-events token: a local SMTP
// server catches the mails (as in the tests) and the token is a throw-away one.
const inbox = await startInbox();
const config = loadConfig({
  AUTH_ENV: "production",
  SMTP_URL: inbox.smtpUrl,
  MAIL_FROM: "bench <no-reply@localhost>",
  ACCOUNT_EVENTS_TOKEN: "bench-events-" + "x".repeat(40),
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
    // Production requires email verification: both answer 202 (no enumeration by status).
    if (a.status !== 202 || b.status !== 202) throw new Error(`unexpected statuses ${a.status} / ${b.status}`);
    fresh.push(a.ms);
    existing.push(b.ms);
  }
  const report = new Report("Sign-up timing: new vs existing email", {
    baseline: "sign-up with a new email, alternating request by request with an existing email in the same run (production: both answer 202)",
  });
  const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(0.95 * xs.length) - 1)]!;
  const round1 = (x: number) => Math.round(x * 10) / 10;
  report.table(
    ["sign-up", "requests", "median ms", "p95 ms"],
    [
      [`new email, 202 (baseline; ${service.database.kind})`, N, round1(median(fresh)), round1(p95(fresh))],
      [`existing email, 202 (${service.database.kind})`, N, round1(median(existing)), round1(p95(existing))],
    ],
  );
  report.text(
    `How to read it: a sign-up with an email that is already registered should not answer much faster than one ` +
      `with a new email, or the timing tells an attacker which addresses have accounts. The new one writes the user and ` +
      `mails a verification link, the existing one mails its owner a notice; both answer no sooner than the sign-up ` +
      `floor (750 ms). Existing / new median in this run: ` +
      `${(median(existing) / median(fresh)).toFixed(2)}.`,
  );
  report.write(reportPath());
} finally {
  await service.close();
  await inbox.close();
  rmSync(dataDir, { recursive: true, force: true });
}
