// Password hashing: argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1) through
// @node-rs/argon2, whose hash/verify run on libuv's thread pool, off the event loop.
// Hashes made before (Better Auth's default scrypt, "salt:key" in hex) keep verifying and
// are replaced by an argon2id hash on the next successful sign-in (`rehashOnSignIn`).
import { hash as argon2Hash, verify as argon2Verify, type Algorithm } from "@node-rs/argon2";
import { verifyPassword as verifyScrypt } from "better-auth/crypto";

// Algorithm is a `const enum` (types only at run time under tsx): 2 is Argon2id.
const ARGON2ID = 2 as Algorithm;
export const ARGON2_OPTIONS = { algorithm: ARGON2ID, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;
/** The PHC prefix of a hash made with exactly ARGON2_OPTIONS. */
export const CURRENT_HASH_PREFIX = `$argon2id$v=19$m=${ARGON2_OPTIONS.memoryCost},t=${ARGON2_OPTIONS.timeCost},p=${ARGON2_OPTIONS.parallelism}$`;

export function hashPassword(password: string): Promise<string> {
  return argon2Hash(password, ARGON2_OPTIONS);
}

export async function verifyPassword({ hash, password }: { hash: string; password: string }): Promise<boolean> {
  if (hash.startsWith("$argon2")) return argon2Verify(hash, password);
  return verifyScrypt({ hash, password });
}

/** True for legacy scrypt hashes and argon2 hashes made with other parameters. */
export function needsRehash(hash: string): boolean {
  return !hash.startsWith(CURRENT_HASH_PREFIX);
}
