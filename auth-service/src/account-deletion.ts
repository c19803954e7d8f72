// Account deletion: Better Auth's `user.deleteUser` (POST /api/auth/delete-user, and DELETE
// /auth/me in routes.ts), confirmed by the password. Better Auth deletes sessions, accounts and
// the user in three separate statements, outside a transaction; here the user row is deleted
// first, in ONE statement, from `beforeDelete`: the foreign keys cascade to sessions, accounts,
// memberships and invitations sent, and the triggers of src/account-events.ts refuse a sole owner,
// delete the organizations the user was the only member of and the user's API keys, and write
// the events, all in that statement's transaction. Better Auth's own deletes then find nothing.
import { APIError } from "better-auth/api";
import { sql, type Kysely } from "kysely";
import { SOLE_OWNER_SQLSTATE } from "./account-events.js";

export const SOLE_OWNER_CODE = "SOLE_OWNER";
export const SOLE_OWNER_MESSAGE =
  "you are the only owner of an organization that has other members: make another member an owner, or delete the organization, first";

function isSoleOwnerError(err: unknown): boolean {
  const e = err as { code?: unknown; cause?: { code?: unknown } } | null;
  return e?.code === SOLE_OWNER_SQLSTATE || e?.cause?.code === SOLE_OWNER_SQLSTATE;
}

/** Deletes the user and everything that cascades from it, atomically; 409 SOLE_OWNER when refused. */
export async function deleteUserAtomically(db: Kysely<any>, userId: string): Promise<void> {
  try {
    await sql`delete from "user" where id = ${userId}`.execute(db);
  } catch (err) {
    if (isSoleOwnerError(err)) throw new APIError("CONFLICT", { code: SOLE_OWNER_CODE, message: SOLE_OWNER_MESSAGE });
    throw err;
  }
}

/** Better Auth `user` options: deletion enabled, done by deleteUserAtomically. */
export function deleteUserOptions(db: Kysely<any>) {
  return {
    deleteUser: {
      enabled: true,
      beforeDelete: async (user: { id: string }) => deleteUserAtomically(db, user.id),
    },
  };
}

/**
 * Better Auth deletes without a password when the session is "fresh" (a day old at most), or
 * by an emailed token when a sender is configured (none yet): here the password is always asked.
 */
export function checkDeletionConfirmed(path: string, body: unknown): void {
  if (path !== "/delete-user") return;
  const password = (body as { password?: unknown } | undefined)?.password;
  if (typeof password !== "string" || password.length === 0) {
    throw new APIError("BAD_REQUEST", { code: "PASSWORD_REQUIRED", message: "confirm the deletion with your password" });
  }
}
