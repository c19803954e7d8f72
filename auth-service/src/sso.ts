// Single sign-on: the providers of OIDC_PROVIDERS (src/sso-config.ts) as Better Auth options.
// Better Auth does the protocol: POST /api/auth/sign-in/social {provider, callbackURL} answers
// the provider's authorization URL (state kept in the database and bound to a signed cookie,
// PKCE S256, an OIDC nonce), and /api/auth/callback/<id> checks the state, the RFC 9207 `iss`,
// exchanges the code, verifies the ID token against the discovered JWKS and issuer, then signs
// the person in (or up) with an ordinary session: the access JWT is minted from it like any other.
//
// Linking an SSO identity to an existing account happens only on a verified email, on both
// sides: the provider says `email_verified: true` (no provider is trusted without it) and the
// existing account's address is verified too (else whoever registered the address first, with
// a password, would share the account with the real owner).
import type { BetterAuthPlugin } from "better-auth";
import { createAuthEndpoint } from "better-auth/api";
import { genericOAuth } from "better-auth/plugins";
import type { GenericOAuthConfig } from "better-auth/plugins/generic-oauth";
import type { Config } from "./config.js";
import type { SsoProvider } from "./sso-config.js";

/** What the sign-in page needs to draw a button: GET /api/auth/sso/providers. */
export interface PublicSsoProvider {
  id: string;
  name: string;
  type: SsoProvider["type"];
}

/** Always asked of OpenID Connect providers: the subject, the address (and whether it is verified), a name. */
const OIDC_SCOPES = ["openid", "email", "profile"];

export function publicProviders(providers: SsoProvider[]): PublicSsoProvider[] {
  return providers.map(({ id, name, type }) => ({ id, name, type }));
}

/** Google, GitHub and Microsoft Entra ID: Better Auth's built-in social providers. */
function socialProviders(providers: SsoProvider[], requireEmailVerification: boolean) {
  const social: Record<string, Record<string, unknown>> = {};
  for (const p of providers) {
    if (p.discoveryUrl) continue;
    social[p.type] = {
      clientId: p.clientId,
      clientSecret: p.clientSecret,
      disableSignUp: !p.allowSignUp,
      requireEmailVerification,
      ...(p.scopes.length ? { scope: p.scopes } : {}),
      ...(p.tenantId ? { tenantId: p.tenantId } : {}),
    };
  }
  return social;
}

/** OpenID Connect by discovery (oidc, okta, keycloak): Better Auth's genericOAuth plugin. */
export function genericProviderConfigs(providers: SsoProvider[], requireEmailVerification: boolean): GenericOAuthConfig[] {
  return providers
    .filter((p) => p.discoveryUrl)
    .map((p) => ({
      providerId: p.id,
      name: p.name,
      discoveryUrl: p.discoveryUrl,
      clientId: p.clientId,
      clientSecret: p.clientSecret,
      scopes: [...new Set([...OIDC_SCOPES, ...p.scopes])],
      pkce: true,
      // Identity comes from the ID token: without the issuer and JWKS from discovery the
      // provider stays unusable (retried at the next sign-in) rather than trusting it unverified.
      requireIdTokenVerification: true,
      disableSignUp: !p.allowSignUp,
      requireEmailVerification,
    }));
}

/** GET /api/auth/sso/providers: the configured providers (ids and names, no secrets), for the sign-in page. */
function providerListPlugin(list: PublicSsoProvider[]): BetterAuthPlugin {
  return {
    id: "sso-provider-list",
    endpoints: {
      ssoProviders: createAuthEndpoint("/sso/providers", { method: "GET" }, async (ctx) => ctx.json({ providers: list })),
    },
  };
}

/** The Better Auth options single sign-on adds: providers, linking rules, the provider list. */
export function ssoOptions(config: Config) {
  // With EMAIL_VERIFICATION=required an address the provider has not verified gets no session
  // until the mailed link is followed, as with a password sign-up.
  const requireEmailVerification = config.emailVerification === "required";
  const generic = genericProviderConfigs(config.sso, requireEmailVerification);
  return {
    socialProviders: socialProviders(config.sso, requireEmailVerification),
    account: {
      // The provider's access and refresh tokens are kept encrypted (nothing here uses them).
      encryptOAuthTokens: true,
      accountLinking: {
        enabled: true,
        trustedProviders: [] as string[],
        requireLocalEmailVerified: true,
        allowDifferentEmails: false,
        updateUserInfoOnLink: false,
      },
    },
    plugins: [...(generic.length ? [genericOAuth({ config: generic })] : []), providerListPlugin(publicProviders(config.sso))],
  };
}
