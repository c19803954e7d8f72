// OIDC_PROVIDERS (environment) -> the single sign-on providers, checked at start-up so a typo
// stops the service with a sentence naming the provider and the field, never at the first
// sign-in. Better Auth does the protocol work (src/sso.ts); this only reads the configuration.
//
// OIDC_PROVIDERS is a JSON array, one object per provider:
//   {"type": "oidc", "id": "acme", "name": "Acme SSO", "discoveryUrl": "https://idp.acme.example/.well-known/openid-configuration",
//    "clientId": "...", "clientSecret": "..."}
//   {"type": "okta" | "keycloak", "issuer": "https://acme.okta.com/oauth2/default", "clientId": "...", ...}
//   {"type": "google" | "github" | "microsoft", "clientId": "...", "clientSecret": "...", "tenantId": "..." (microsoft)}
// A secret left out of the JSON is read from OIDC_<ID>_CLIENT_SECRET (id upper-cased, "-" -> "_"),
// so the list itself can live in plain configuration and the secrets in a secret store.

/** Thrown for a configuration the service refuses to start with (src/config.ts re-throws it as ConfigError). */
export class SsoConfigError extends Error {}

/** OpenID Connect by discovery (any provider), its presets, and Better Auth's built-in social providers. */
export const SSO_TYPES = ["oidc", "okta", "keycloak", "google", "microsoft", "github"] as const;
export type SsoType = (typeof SSO_TYPES)[number];

/** The types Better Auth ships as social providers: one each, and its id is the type. */
const SOCIAL_TYPES: ReadonlySet<SsoType> = new Set(["google", "microsoft", "github"]);

const DEFAULT_NAMES: Record<SsoType, string | undefined> = {
  oidc: undefined,
  okta: "Okta",
  keycloak: "Keycloak",
  google: "Google",
  microsoft: "Microsoft",
  github: "GitHub",
};

export interface SsoProvider {
  /** Better Auth's provider id: the callback is `/api/auth/callback/<id>`. */
  id: string;
  type: SsoType;
  /** What the "Sign in with …" button says. */
  name: string;
  clientId: string;
  clientSecret: string;
  /** OpenID discovery document (oidc, okta, keycloak). */
  discoveryUrl?: string;
  /** Microsoft Entra ID tenant ("common", "organizations" or a tenant id). */
  tenantId?: string;
  /** Extra scopes; "openid email profile" are always asked of OIDC providers. */
  scopes: string[];
  /** false: only people who already have an account (same verified email, or linked before) get in. */
  allowSignUp: boolean;
}

const ID = /^[a-z0-9][a-z0-9-]{0,31}$/;
/** Provider ids Better Auth (or this service) uses for something else. */
const RESERVED_IDS = new Set(["credential", "email-password"]);
const NAME_MAX = 40;
const FIELDS: Record<SsoType, readonly string[]> = {
  oidc: ["type", "id", "name", "clientId", "clientSecret", "discoveryUrl", "issuer", "scopes", "allowSignUp"],
  okta: ["type", "id", "name", "clientId", "clientSecret", "issuer", "scopes", "allowSignUp"],
  keycloak: ["type", "id", "name", "clientId", "clientSecret", "issuer", "scopes", "allowSignUp"],
  google: ["type", "id", "name", "clientId", "clientSecret", "scopes", "allowSignUp"],
  github: ["type", "id", "name", "clientId", "clientSecret", "scopes", "allowSignUp"],
  microsoft: ["type", "id", "name", "clientId", "clientSecret", "tenantId", "scopes", "allowSignUp"],
};

const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** The environment variable a provider's secret may come from. */
export function secretVariable(id: string): string {
  return `OIDC_${id.toUpperCase().replace(/-/g, "_")}_CLIENT_SECRET`;
}

function text(where: string, entry: Record<string, unknown>, field: string, required: boolean): string | undefined {
  const value = entry[field];
  if (value === undefined || value === null || value === "") {
    if (required) throw new SsoConfigError(`${where}: "${field}" is required`);
    return undefined;
  }
  if (typeof value !== "string" || value.trim() !== value || /[\u0000-\u001f\u007f]/.test(value)) {
    throw new SsoConfigError(`${where}: "${field}" must be a string without surrounding spaces or control characters`);
  }
  return value;
}

/**
 * An http(s) URL; plain http only on a loopback address outside production (the discovery
 * document tells where the browser and the tokens go: it must not be open to tampering).
 */
function endpoint(where: string, field: string, raw: string, devMode: boolean): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new SsoConfigError(`${where}: "${field}" is not a URL: "${raw}"`);
  }
  if (url.protocol === "https:") return raw;
  if (url.protocol === "http:" && devMode && LOOPBACK_HOSTS.has(url.hostname)) return raw;
  throw new SsoConfigError(
    `${where}: "${field}" must be an https:// URL (plain http is accepted only for localhost outside production), got "${raw}"`,
  );
}

function discoveryFromIssuer(issuer: string): string {
  return `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
}

function parseEntry(entry: unknown, index: number, env: NodeJS.ProcessEnv, devMode: boolean): SsoProvider {
  let where = `OIDC_PROVIDERS[${index}]`;
  if (!entry || typeof entry !== "object" || Array.isArray(entry)) throw new SsoConfigError(`${where} must be an object`);
  const fields = entry as Record<string, unknown>;
  const type = fields.type;
  if (typeof type !== "string" || !(SSO_TYPES as readonly string[]).includes(type)) {
    throw new SsoConfigError(`${where}: "type" must be one of ${SSO_TYPES.join(", ")}, got ${JSON.stringify(type)}`);
  }
  const kind = type as SsoType;
  const social = SOCIAL_TYPES.has(kind);
  const id = text(where, fields, "id", !social && kind === "oidc") ?? kind;
  if (!ID.test(id) || RESERVED_IDS.has(id)) {
    throw new SsoConfigError(`${where}: "id" must be 1-32 lowercase letters, digits or "-" (and not ${[...RESERVED_IDS].join(" or ")}), got "${id}"`);
  }
  if (social && id !== kind) throw new SsoConfigError(`${where}: a ${kind} provider's id is "${kind}" (Better Auth has one of each), got "${id}"`);
  where = `OIDC_PROVIDERS[${index}] ("${id}")`;
  const unknown = Object.keys(fields).filter((field) => !FIELDS[kind].includes(field));
  if (unknown.length) {
    throw new SsoConfigError(`${where}: unknown field${unknown.length > 1 ? "s" : ""} ${unknown.map((f) => `"${f}"`).join(", ")} (a ${kind} provider takes ${FIELDS[kind].join(", ")})`);
  }
  const name = text(where, fields, "name", false) ?? DEFAULT_NAMES[kind] ?? id;
  if (name.length > NAME_MAX) throw new SsoConfigError(`${where}: "name" must be at most ${NAME_MAX} characters`);
  const clientId = text(where, fields, "clientId", true)!;
  const clientSecret = text(where, fields, "clientSecret", false) ?? (env[secretVariable(id)] || undefined);
  if (!clientSecret) throw new SsoConfigError(`${where}: no client secret: set "clientSecret" or ${secretVariable(id)}`);
  const scopes = fields.scopes ?? [];
  if (!Array.isArray(scopes) || scopes.some((s) => typeof s !== "string" || !/^[\x21-\x7e]+$/.test(s))) {
    throw new SsoConfigError(`${where}: "scopes" must be a list of scope names (no spaces)`);
  }
  const allowSignUp = fields.allowSignUp ?? true;
  if (typeof allowSignUp !== "boolean") throw new SsoConfigError(`${where}: "allowSignUp" must be true or false`);

  let discoveryUrl: string | undefined;
  if (kind === "oidc") {
    const given = text(where, fields, "discoveryUrl", false);
    const issuer = text(where, fields, "issuer", false);
    if (!given === !issuer) throw new SsoConfigError(`${where}: give either "discoveryUrl" or "issuer" (whose /.well-known/openid-configuration is read)`);
    discoveryUrl = given ? endpoint(where, "discoveryUrl", given, devMode) : discoveryFromIssuer(endpoint(where, "issuer", issuer!, devMode));
  } else if (kind === "okta" || kind === "keycloak") {
    const issuer = text(where, fields, "issuer", true)!;
    discoveryUrl = discoveryFromIssuer(endpoint(where, "issuer", issuer, devMode));
  }
  const tenantId = kind === "microsoft" ? text(where, fields, "tenantId", false) ?? "common" : undefined;
  return { id, type: kind, name, clientId, clientSecret, discoveryUrl, tenantId, scopes: scopes as string[], allowSignUp };
}

/**
 * OIDC_PROVIDERS (`raw`) -> the providers, in the order given (the order of the buttons);
 * `env` holds the secrets left out of it.
 */
export function parseSsoProviders(raw: string | undefined, env: NodeJS.ProcessEnv, devMode: boolean): SsoProvider[] {
  raw = raw?.trim();
  if (!raw) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new SsoConfigError(`OIDC_PROVIDERS is not valid JSON (${(err as Error).message}): it must be a list such as [{"type": "google", "clientId": "...", "clientSecret": "..."}]`);
  }
  if (!Array.isArray(parsed)) throw new SsoConfigError("OIDC_PROVIDERS must be a JSON list of provider objects");
  const providers = parsed.map((entry, index) => parseEntry(entry, index, env, devMode));
  const seen = new Set<string>();
  for (const provider of providers) {
    if (seen.has(provider.id)) throw new SsoConfigError(`OIDC_PROVIDERS: the id "${provider.id}" is used twice`);
    seen.add(provider.id);
  }
  return providers;
}
