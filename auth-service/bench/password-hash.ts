// npm run bench:password [-- --verifies 48 --concurrency 8 --rounds 2] [-- --report FILE]
// Password verification (what one sign-in costs) for the former hash (Better Auth's scrypt,
// N=16384, r=16) and the current one (argon2id, m=19456 KiB, t=2, p=1), in the same run,
// alternating round by round: verifications/s with --concurrency concurrent callers, their
// p50/p95, and the event loop's worst delay meanwhile (both libraries hash on libuv's pool).
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { hashPassword as scryptHash, verifyPassword as scryptVerify } from "better-auth/crypto";
import { hashPassword as argonHash, verifyPassword as argonVerify } from "../src/password-hashing.js";
import { numberArg, Report, reportPath } from "./report.js";

const VERIFIES = numberArg("verifies", 48);
const CONCURRENCY = numberArg("concurrency", 8);
const ROUNDS = numberArg("rounds", 2);
const PASSWORD = "correct horse battery staple";

const pct = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.round(q * (values.length - 1)))];

async function run(verify: () => Promise<boolean>) {
  const latencies: number[] = [];
  let left = VERIFIES;
  const lag = monitorEventLoopDelay({ resolution: 5 });
  lag.enable();
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (left-- > 0) {
      const t = performance.now();
      if (!(await verify())) throw new Error("verification failed");
      latencies.push(performance.now() - t);
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  lag.disable();
  return { rate: VERIFIES / seconds, latencies, maxLagMs: lag.max / 1e6 };
}

const report = new Report("Password hashing: sign-in capacity", {
  baseline: "scrypt N=16384 r=16 (Better Auth's default, the former hasher), alternating round by round with argon2id in the same process",
});
const hashes = { scrypt: await scryptHash(PASSWORD), argon2id: await argonHash(PASSWORD) };
const kinds = {
  "scrypt N=16384 r=16 (former, baseline)": () => scryptVerify({ hash: hashes.scrypt, password: PASSWORD }),
  "argon2id m=19456 KiB t=2 p=1 (current)": () => argonVerify({ hash: hashes.argon2id, password: PASSWORD }),
};
const results: Record<string, { rates: number[]; latencies: number[]; lag: number[] }> = {};
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, verify] of Object.entries(kinds)) {
    const r = await run(verify);
    const acc = (results[name] ??= { rates: [], latencies: [], lag: [] });
    acc.rates.push(r.rate);
    acc.latencies.push(...r.latencies);
    acc.lag.push(r.maxLagMs);
  }
}
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const rows = Object.entries(results).map(([name, r]) => ({ name, rate: median(r.rates), p50: pct(r.latencies, 0.5), p95: pct(r.latencies, 0.95), lag: Math.max(...r.lag) }));
const round1 = (x: number) => Math.round(x * 10) / 10;
report.text(`${VERIFIES} verifications per round, ${ROUNDS} rounds, ${CONCURRENCY} concurrent callers; UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}.`);
report.table(
  ["hash", `verifications/s at ${CONCURRENCY} concurrent (median round)`, "p50 ms", "p95 ms", "event-loop max delay ms"],
  rows.map((r) => [r.name, round1(r.rate), Math.round(r.p50), Math.round(r.p95), round1(r.lag)]),
);
const [scryptRow, argonRow] = rows;
report.text(
  `How to read it: one verification is what a sign-in costs in password work, so verifications/s bounds the sign-ins ` +
    `per second of one process on this machine. argon2id / scrypt in this run: ${(argonRow!.rate / scryptRow!.rate).toFixed(2)}x ` +
    `the verifications per second. Both libraries hash on libuv's thread pool; the event-loop max delay shows whether the ` +
    `loop stays free meanwhile (compare it with the other hash in the same run).`,
);
report.write(reportPath());
