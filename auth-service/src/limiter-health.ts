// Fail-open bookkeeping for the rate-limit stores: a store that cannot answer (Redis down) lets the
// request through rather than failing every sign-in; each such pass is counted and logged
// (at most one warning per 10 s per component, so an outage does not flood the log).
import { logLine } from "./safe-log.js";

export const limiterHealth = { failOpen: 0 };

const WARN_EVERY_MS = 10_000;
const lastWarning = new Map<string, number>();

export async function failOpen<T>(component: string, op: () => Promise<T>, fallback: T): Promise<T> {
  try {
    return await op();
  } catch (err) {
    limiterHealth.failOpen += 1;
    const now = Date.now();
    if (now - (lastWarning.get(component) ?? 0) >= WARN_EVERY_MS) {
      lastWarning.set(component, now);
      const reason = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      logLine("warn", `${component} store unavailable, allowing the request (fail-open #${limiterHealth.failOpen}): ${reason}`);
    }
    return fallback;
  }
}
