// Passkeys (WebAuthn) through Better Auth's passkey plugin: a signed-in user registers one or
// more (/passkey/generate-register-options -> the browser's navigator.credentials.create ->
// /passkey/verify-registration), lists and removes them; anyone signs in with one alone
// (/passkey/generate-authenticate-options -> navigator.credentials.get ->
// /passkey/verify-authentication), which opens an ordinary session: the same JWTs, API keys
// and organizations follow from it.
//
// The relying party comes from TRUSTED_ORIGINS (src/config.ts, passkeyRelyingParty): the
// plugin's default would take the expected origin from the request's own Origin header, which
// any non-browser client can set, so the origins are always given here.
import { PASSKEY_ERROR_CODES, passkey } from "@better-auth/passkey";
import { APIError } from "better-auth/api";
import type { Kysely } from "kysely";
import type { Config } from "./config.js";

export function passkeyPlugin(config: Pick<Config, "passkey" | "signInDisplayName">, db: Kysely<any>) {
  return passkey({
    rpID: config.passkey.rpId,
    rpName: config.signInDisplayName,
    origin: config.passkey.origins,
    authenticatorSelection: { residentKey: "required", userVerification: "preferred" },
    authentication: {
      afterVerification: ({ verification, clientData }) =>
        claimSignatureCounter(db, clientData.id, verification.authenticationInfo.newCounter),
    },
  });
}

/**
 * The clone check, made atomic. An authenticator that counts its signatures (security keys do;
 * synced passkeys always say 0) must show a higher count each time: SimpleWebAuthn compares it
 * with the stored one, and the plugin then stores it with a plain update. Sign-ins showing the
 * same count at the same time (a cloned key used beside the original), each with its own
 * challenge, would all pass that comparison before any update; this compare-and-set, run after
 * the signature is verified and before the session is made, lets exactly one of them through.
 */
async function claimSignatureCounter(db: Kysely<any>, credentialId: string, newCounter: number): Promise<void> {
  if (newCounter === 0) return; // the authenticator does not count: nothing to compare
  const claimed = await db
    .updateTable("passkey")
    .set({ counter: newCounter })
    .where("credentialID", "=", credentialId)
    .where("counter", "<", newCounter)
    // The row back, not numUpdatedRows: PGlite's Kysely dialect reports no affected-row count.
    .returning("id")
    .executeTakeFirst();
  // What the plugin answers when SimpleWebAuthn finds the count not higher: a lost race reads the same.
  if (!claimed) throw APIError.from("BAD_REQUEST", PASSKEY_ERROR_CODES.AUTHENTICATION_FAILED);
}
