// Better Auth rate-limit storage in Redis (REDIS_URL), shared by every instance.
// Fixed window per key: INCR, set the expiry on the first hit, report the remaining TTL.
import { Redis } from "ioredis";

export interface RateLimitStore {
  consume(key: string, rule: { window: number; max: number }): Promise<{ allowed: boolean; retryAfter: number | null }>;
  close(): Promise<void>;
}

const CONSUME = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}`;

export function createRedisRateLimitStorage(url: string, prefix = "auth-service:rl:"): RateLimitStore {
  const redis = new Redis(url, { maxRetriesPerRequest: 2, enableOfflineQueue: true, lazyConnect: false });
  redis.on("error", (err) => console.error("[auth-service] redis error:", err.message));
  return {
    async consume(key, rule) {
      const [count, ttl] = (await redis.eval(CONSUME, 1, prefix + key, String(rule.window))) as [number, number];
      if (count <= rule.max) return { allowed: true, retryAfter: null };
      return { allowed: false, retryAfter: Math.max(1, ttl) };
    },
    async close() {
      redis.disconnect();
    },
  };
}
