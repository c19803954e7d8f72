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
import { passkey } from "@better-auth/passkey";
import type { Config } from "./config.js";

export function passkeyPlugin(config: Pick<Config, "passkey" | "signInDisplayName">) {
  return passkey({
    rpID: config.passkey.rpId,
    rpName: config.signInDisplayName,
    origin: config.passkey.origins,
    authenticatorSelection: { residentKey: "required", userVerification: "preferred" },
  });
}
