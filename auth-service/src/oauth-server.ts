// The auth-service as an OAuth 2.1 authorization server for MCP clients (and any OAuth client of
// the rag-service): @better-auth/oauth-provider does the protocol — dynamic client registration
// (RFC 7591), authorization code with PKCE (S256 only), refresh tokens, resource indicators
// (RFC 8707), authorization-server metadata (RFC 8414) and OIDC discovery. This module is its
// configuration, the discovery routes at the issuer's root and the sign-in and consent pages
// (src/oauth-pages.ts).
//
// Access tokens are JWTs signed by the jwt plugin, so with the same keys (JWKS) as every other
// access token the rag-service verifies: `sub` is the user, `aud` the requested resource (one
// of OAUTH_RESOURCES, the rag-service's PUBLIC_URL and PUBLIC_URL/mcp), `scope` the granted
// scopes ("read" and/or "write" are the rag-service's; openid, profile, email, offline_access
// are OAuth's own), plus the user's `orgs` like a session token. Tokens are issued to users only:
// the client-credentials grant is off, so a registered client can never be a principal itself.
import { oauthProvider, verifyOAuthQueryParams } from "@better-auth/oauth-provider";
import type { BetterAuthPlugin } from "better-auth";
import { createAuthMiddleware, getSessionFromCtx } from "better-auth/api";
import { Hono } from "hono";
import type { Auth } from "./auth.js";
import type { Config } from "./config.js";
import { proxyToAuth } from "./http.js";
import { consentPage, invalidRequestPage, PAGES_SCRIPT, signInPage, type ConsentDetails } from "./oauth-pages.js";
import { orgsPayload, type MemberStore } from "./organizations.js";

export const OAUTH_SIGN_IN_PATH = "/oauth/sign-in";
export const OAUTH_CONSENT_PATH = "/oauth/consent";
const PAGES_SCRIPT_PATH = "/oauth/pages.js";

/** The rag-service's scopes (its SCOPES): "write" includes reading. */
export const RAG_SCOPES = ["read", "write"] as const;
/** Everything a client may ask for: OIDC's, refresh tokens (offline_access) and the rag-service's. */
export const OAUTH_SCOPES = ["openid", "profile", "email", "offline_access", ...RAG_SCOPES];

/** The OAuth provider, and the revocation that withdrawing consent lacks in it. */
export function oauthServerPlugins(config: Config, memberStore: () => Promise<MemberStore>) {
  return [oauthProviderPlugin(config, memberStore), consentWithdrawalEndsGrant()] as const;
}

function oauthProviderPlugin(config: Config, memberStore: () => Promise<MemberStore>) {
  return oauthProvider({
    loginPage: OAUTH_SIGN_IN_PATH,
    consentPage: OAUTH_CONSENT_PATH,
    scopes: OAUTH_SCOPES,
    // No client_credentials: its token's subject would be the client itself (anyone may register one).
    grantTypes: ["authorization_code", "refresh_token"],
    // MCP clients register themselves, without an account (RFC 7591; the MCP authorization spec).
    allowDynamicClientRegistration: config.oauth.registration,
    allowUnauthenticatedClientRegistration: config.oauth.registration,
    // Native clients (MCP desktop apps, CLIs) often omit application_type and redirect to
    // http://127.0.0.1:<port>/callback: a loopback or custom-scheme redirect makes them native.
    clientRegistrationDefaultApplicationType: "infer",
    // RFC 8707: only these resources get tokens; a new client is linked to all of them.
    resources: config.oauth.resources,
    resourceSeedMode: "overwrite",
    clientRegistrationDefaultResources: config.oauth.resources,
    // As long as a session's access JWT: the rag-service reads membership changes that far back.
    accessTokenExpiresIn: config.jwt.lifetimeSeconds,
    refreshTokenExpiresIn: config.oauth.refreshTokenLifetimeSeconds,
    rateLimit: oauthRateLimits(config),
    // The memberships, read when the token is minted, as in a session token (src/organizations.ts).
    customAccessTokenClaims: async ({ user }) => (user ? orgsPayload(await memberStore(), user.id) : {}),
  });
}

/**
 * Per client IP, as every other route (AUTH_RATE_LIMIT_WINDOW/MAX) instead of the plugin's own
 * defaults; a registration adds a row, like a sign-up: the sign-up rule (AUTH_RATE_LIMIT_SIGNIN_*).
 */
function oauthRateLimits(config: Config) {
  const route = { window: config.rateLimit.window, max: config.rateLimit.max };
  return {
    token: route,
    authorize: route,
    introspect: route,
    revoke: route,
    userinfo: route,
    register: { window: config.rateLimit.credentialsWindow, max: config.rateLimit.credentialsMax },
  };
}

/**
 * A user withdraws a client's access with POST /api/auth/oauth2/delete-consent {id} (the ids
 * from GET /api/auth/oauth2/get-consents). The plugin (1.7.25) only deletes the consent: the
 * client's refresh tokens would go on minting access tokens for the rest of their lifetime. This
 * deletes them, and the client's stored access tokens of that user, before the consent goes (as
 * the plugin itself does when a refresh token is replayed). Access JWTs already issued run out
 * within their 15 minutes.
 */
function consentWithdrawalEndsGrant(): BetterAuthPlugin {
  return {
    id: "oauth-consent-withdrawal",
    hooks: {
      before: [
        {
          matcher: (ctx) => ctx.path === "/oauth2/delete-consent",
          handler: createAuthMiddleware(async (ctx) => {
            const id = (ctx.body as { id?: unknown } | undefined)?.id;
            const session = await getSessionFromCtx(ctx);
            if (typeof id !== "string" || !session) return; // the endpoint itself refuses these
            const consent = await ctx.context.adapter.findOne<{ clientId: string; userId: string }>({
              model: "oauthConsent",
              where: [{ field: "id", value: id }],
            });
            if (!consent || consent.userId !== session.user.id) return;
            const grant = [
              { field: "clientId", value: consent.clientId },
              { field: "userId", value: consent.userId },
            ];
            await ctx.context.adapter.deleteMany({ model: "oauthAccessToken", where: grant });
            await ctx.context.adapter.deleteMany({ model: "oauthRefreshToken", where: grant });
          }),
        },
      ],
    },
  };
}

/**
 * Routes outside /api/auth: RFC 8414 metadata and OIDC discovery at the issuer's root (the
 * issuer is the service's base URL, so clients look there), and the sign-in and consent pages
 * the authorize endpoint sends the browser to.
 */
export function oauthRoutes(auth: Auth, config: Config, trustProxies: boolean) {
  const routes = new Hono();
  // The plugin answers these itself (its onRequest hook) when they reach Better Auth's handler.
  const discovery = (c: Parameters<typeof proxyToAuth>[1]) => proxyToAuth(auth, c, trustProxies);
  routes.get("/.well-known/oauth-authorization-server", discovery);
  routes.get("/.well-known/openid-configuration", discovery);

  routes.get(PAGES_SCRIPT_PATH, (c) =>
    c.body(PAGES_SCRIPT, 200, { "content-type": "text/javascript; charset=utf-8", "cache-control": "no-store" }),
  );
  routes.get(OAUTH_SIGN_IN_PATH, async (c) => {
    const query = new URL(c.req.url).search.slice(1);
    if (!(await verifyOAuthQueryParams(query, config.secret))) return pageResponse(invalidRequestPage(PAGES_SCRIPT_PATH), 400);
    return pageResponse(signInPage(PAGES_SCRIPT_PATH), 200);
  });
  routes.get(OAUTH_CONSENT_PATH, async (c) => {
    const query = new URL(c.req.url).search.slice(1);
    const details = await consentDetails(auth, config, query, c.req.raw.headers);
    if (!details) return pageResponse(invalidRequestPage(PAGES_SCRIPT_PATH), 400);
    return pageResponse(consentPage(PAGES_SCRIPT_PATH, details), 200);
  });
  return routes;
}

/** What the consent page shows, from the signed authorization request; null if it is not one. */
async function consentDetails(auth: Auth, config: Config, query: string, headers: Headers): Promise<ConsentDetails | null> {
  if (!(await verifyOAuthQueryParams(query, config.secret))) return null;
  const params = new URLSearchParams(query);
  const clientId = params.get("client_id");
  if (!clientId) return null;
  const ctx = await auth.$context;
  const client = await ctx.adapter.findOne<{ name?: string | null; uri?: string | null }>({
    model: "oauthClient",
    where: [{ field: "clientId", value: clientId }],
  });
  if (!client) return null;
  const session = await auth.api.getSession({ headers });
  return {
    clientName: client.name || clientId,
    clientUri: client.uri ?? undefined,
    scopes: (params.get("scope") ?? "").split(" ").filter(Boolean),
    resources: params.getAll("resource"),
    signedInAs: session?.user.email,
  };
}

/**
 * The pages run only our script (no inline code) and may not be framed (clickjacking on the
 * consent button); they post to this origin only.
 */
function pageResponse(html: string, status: 200 | 400): Response {
  return new Response(html, {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "content-security-policy":
        "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      "x-frame-options": "DENY",
    },
  });
}
