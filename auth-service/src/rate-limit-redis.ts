// Rate-limit and account-throttle storage in Redis (REDIS_URL), shared by every instance.
// Fixed window per key: INCR, set the expiry on the first hit, report the remaining TTL.
// Redis down: the limiter fails open (limiter-health.ts) instead of answering 500.
import { Redis } from "ioredis";
import { failOpen } from "./limiter-health.js";
import { logLine } from "./safe-log.js";

export interface RateLimitStore {
  consume(key: string, rule: { window: number; max: number }): Promise<{ allowed: boolean; retryAfter: number | null }>;
}

const CONSUME = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}`;

export function createRedisClient(url: string): Redis {
  // No offline queue and a short command timeout: while Redis is down a command fails at once
  // (and the limiter fails open) instead of holding the request.
  const redis = new Redis(url, { maxRetriesPerRequest: 1, enableOfflineQueue: false, commandTimeout: 1_000, lazyConnect: false });
  let lastError = 0;
  redis.on("error", (err) => {
    if (Date.now() - lastError < 10_000) return;
    lastError = Date.now();
    logLine("error", `redis error: ${err.message}`);
  });
  return redis;
}

export function createRedisRateLimitStorage(redis: Redis, prefix: string): RateLimitStore {
  return {
    async consume(key, rule) {
      return failOpen(
        "rate limit",
        async () => {
          const [count, ttl] = (await redis.eval(CONSUME, 1, prefix + key, String(rule.window))) as [number, number];
          if (count <= rule.max) return { allowed: true, retryAfter: null };
          return { allowed: false, retryAfter: Math.max(1, ttl) };
        },
        { allowed: true, retryAfter: null },
      );
    },
  };
}
