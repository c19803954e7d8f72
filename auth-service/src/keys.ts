// JWT signing-key rotation on top of Better Auth's jwt plugin.
//
// Better Auth signs with the newest *live* key (live = no expiresAt, or expiresAt in the future)
// and its JWKS endpoint publishes every key until expiresAt + gracePeriod. A staged rotation
// therefore needs no change to Better Auth:
//   stage:    create a key with Better Auth's createJwk (private key encrypted with the secret),
//             dated just before the signing key, so it is published in the JWKS but not used yet;
//   activate: set expiresAt = now on the other live keys: Better Auth signs with the staged key,
//             and keeps publishing the retired keys for gracePeriod (>= the JWT lifetime);
//   prune:    delete keys whose expiresAt + gracePeriod has passed (the JWKS already hides them).
import { createJwk, type Jwk, type JwtOptions } from "better-auth/plugins/jwt";
import type { Auth } from "./auth.js";

export type KeyState = "signing" | "staged" | "retired" | "expired";
export interface KeyInfo {
  kid: string;
  alg?: string;
  state: KeyState;
  createdAt: Date;
  expiresAt?: Date | null;
}

async function context(auth: Auth) {
  const ctx = await auth.$context;
  const plugin = auth.options.plugins.find((p) => p.id === "jwt") as { options?: JwtOptions } | undefined;
  return { ctx, options: plugin?.options ?? {} };
}

async function allKeys(auth: Auth): Promise<Jwk[]> {
  const { ctx } = await context(auth);
  return ctx.adapter.findMany<Jwk>({ model: "jwks" });
}

const isLive = (k: Jwk, now: Date) => !k.expiresAt || new Date(k.expiresAt) > now;

export async function listKeys(auth: Auth, now = new Date()): Promise<KeyInfo[]> {
  const { options } = await context(auth);
  const grace = (options.jwks?.gracePeriod ?? 2_592_000) * 1000;
  const keys = (await allKeys(auth)).sort((a, b) => +new Date(b.createdAt) - +new Date(a.createdAt));
  const signing = keys.find((k) => isLive(k, now));
  return keys.map((k) => {
    let state: KeyState;
    if (k === signing) state = "signing";
    else if (isLive(k, now)) state = "staged";
    else state = +new Date(k.expiresAt!) + grace > now.getTime() ? "retired" : "expired";
    return { kid: k.id, alg: k.alg, state, createdAt: new Date(k.createdAt), expiresAt: k.expiresAt ? new Date(k.expiresAt) : null };
  });
}

/**
 * Publishes a new key in the JWKS without signing with it yet. Returns its kid. When there is
 * no live key at all, the new key simply becomes the signing key.
 */
export async function stageKey(auth: Auth): Promise<string> {
  const { ctx, options } = await context(auth);
  const before = await listKeys(auth);
  const current = before.find((k) => k.state === "signing");
  const key = await createJwk({ context: ctx } as never, options);
  if (current) {
    await ctx.adapter.update({
      model: "jwks",
      where: [{ field: "id", value: key.id }],
      update: { createdAt: new Date(current.createdAt.getTime() - 1) },
    });
  }
  return key.id;
}

/** Makes `kid` (default: the only staged key) the signing key; the others are retired. */
export async function activateKey(auth: Auth, kid?: string, now = new Date()): Promise<{ activated: string; retired: string[] }> {
  const { ctx } = await context(auth);
  const keys = await listKeys(auth, now);
  const staged = keys.filter((k) => k.state === "staged");
  const target = kid ? keys.find((k) => k.kid === kid && (k.state === "staged" || k.state === "signing")) : staged.length === 1 ? staged[0] : undefined;
  if (!target) {
    throw new Error(kid ? `no live key with kid ${kid}` : `expected exactly one staged key, found ${staged.length}: run "stage" first or pass a kid`);
  }
  const retired: string[] = [];
  for (const k of keys) {
    if (k.kid === target.kid || (k.state !== "signing" && k.state !== "staged")) continue;
    await ctx.adapter.update({ model: "jwks", where: [{ field: "id", value: k.kid }], update: { expiresAt: now } });
    retired.push(k.kid);
  }
  return { activated: target.kid, retired };
}

/** Deletes keys past expiresAt + gracePeriod (no longer published, so no token can use them). */
export async function pruneKeys(auth: Auth, now = new Date()): Promise<string[]> {
  const { ctx } = await context(auth);
  const expired = (await listKeys(auth, now)).filter((k) => k.state === "expired");
  for (const k of expired) await ctx.adapter.delete({ model: "jwks", where: [{ field: "id", value: k.kid }] });
  return expired.map((k) => k.kid);
}
