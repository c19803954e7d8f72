// npx tsx bench/password-hash.ts [--verifies 48] [--concurrency 8] [--rounds 2]
// Password verification (what one sign-in costs) for the former hash (Better Auth's scrypt,
// N=16384, r=16) and the current one (argon2id, m=19456 KiB, t=2, p=1), in the same run,
// alternating round by round: verifications/s with --concurrency concurrent callers, their
// p50/p95, and the event loop's worst delay meanwhile (both libraries hash on libuv's pool).
import os from "node:os";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import { hashPassword as scryptHash, verifyPassword as scryptVerify } from "better-auth/crypto";
import { hashPassword as argonHash, verifyPassword as argonVerify } from "../src/password-hashing.js";

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const VERIFIES = arg("verifies", 48);
const CONCURRENCY = arg("concurrency", 8);
const ROUNDS = arg("rounds", 2);
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

const hashes = { scrypt: await scryptHash(PASSWORD), argon2id: await argonHash(PASSWORD) };
const kinds = {
  "scrypt N=16384 r=16 (former, baseline)": () => scryptVerify({ hash: hashes.scrypt, password: PASSWORD }),
  "argon2id m=19456 KiB t=2 p=1 (current)": () => argonVerify({ hash: hashes.argon2id, password: PASSWORD }),
};
const results: Record<string, { rates: number[]; latencies: number[]; lag: number[] }> = {};
console.log(`cpus: ${os.cpus().length}; UV_THREADPOOL_SIZE: ${process.env.UV_THREADPOOL_SIZE ?? "4 (default)"}; load average before: ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, verify] of Object.entries(kinds)) {
    const r = await run(verify);
    const acc = (results[name] ??= { rates: [], latencies: [], lag: [] });
    acc.rates.push(r.rate);
    acc.latencies.push(...r.latencies);
    acc.lag.push(r.maxLagMs);
  }
}
console.log(`load average after: ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
console.log(`\n| hash | verifications/s at ${CONCURRENCY} concurrent (median round) | p50 ms | p95 ms | event-loop max delay ms |`);
console.log("|---|---|---|---|---|");
for (const [name, r] of Object.entries(results)) {
  const rate = [...r.rates].sort((a, b) => a - b)[Math.floor(r.rates.length / 2)];
  console.log(`| ${name} | ${rate.toFixed(1)} | ${pct(r.latencies, 0.5).toFixed(0)} | ${pct(r.latencies, 0.95).toFixed(0)} | ${Math.max(...r.lag).toFixed(1)} |`);
}
