// A local OpenID Connect provider for trying single sign-on without an identity provider of
// your own, and for the end-to-end tests: `oidc-provider` (a certified OpenID Connect
// implementation) with one confidential client and a few test people. Its login page is the
// package's development one: any password is accepted for a listed login.
//
//   make oidc-provider        (or: cd auth-service && npm run oidc-provider)
//
// prints the OIDC_PROVIDERS line that points the auth-service at it. Everything is in memory:
// a restart forgets sessions, codes and grants. Never expose it: it signs in anyone.
//
// Environment (all optional):
//   OIDC_DEV_PORT           3005
//   OIDC_DEV_CLIENT_ID      rag-local
//   OIDC_DEV_CLIENT_SECRET  a fixed development secret (printed)
//   OIDC_DEV_REDIRECT_URIS  http://localhost:3001/api/auth/callback/local (comma-separated)
//   OIDC_DEV_USERS          JSON list of {login, email, email_verified, name}; default alice
//                           (verified address) and bob (unverified address)
import { randomBytes } from "node:crypto";
import Provider from "oidc-provider";

interface TestPerson {
  login: string;
  email: string;
  email_verified: boolean;
  name: string;
}

const DEFAULT_PEOPLE: TestPerson[] = [
  { login: "alice", email: "alice@example.com", email_verified: true, name: "Alice Example" },
  { login: "bob", email: "bob@example.com", email_verified: false, name: "Bob Unverified" },
];

function fail(message: string): never {
  console.error(`oidc-provider: ${message}`);
  process.exit(1);
}

function people(raw: string | undefined): Map<string, TestPerson> {
  if (!raw) return new Map(DEFAULT_PEOPLE.map((p) => [p.login, p]));
  let list: unknown;
  try {
    list = JSON.parse(raw);
  } catch {
    fail("OIDC_DEV_USERS is not valid JSON");
  }
  if (!Array.isArray(list)) fail("OIDC_DEV_USERS must be a JSON list");
  const byLogin = new Map<string, TestPerson>();
  for (const p of list as Partial<TestPerson>[]) {
    if (typeof p?.login !== "string" || typeof p.email !== "string" || typeof p.email_verified !== "boolean") {
      fail('each OIDC_DEV_USERS entry needs "login", "email" and "email_verified" (true or false)');
    }
    byLogin.set(p.login, { login: p.login, email: p.email, email_verified: p.email_verified, name: p.name ?? p.login });
  }
  return byLogin;
}

const port = Number(process.env.OIDC_DEV_PORT || 3005);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail("OIDC_DEV_PORT must be a port number");
// 127.0.0.1, not localhost: the auth-service fetches discovery and tokens from the same address
// the browser is sent to, and "localhost" may resolve to ::1 where nothing listens.
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_DEV_CLIENT_ID || "rag-local";
const clientSecret = process.env.OIDC_DEV_CLIENT_SECRET || "rag-local-development-secret";
const redirectUris = (process.env.OIDC_DEV_REDIRECT_URIS || "http://localhost:3001/api/auth/callback/local")
  .split(",")
  .map((u) => u.trim())
  .filter(Boolean);
const accounts = people(process.env.OIDC_DEV_USERS);

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      // Better Auth sends the secret in the form body by default.
      token_endpoint_auth_method: "client_secret_post",
    },
  ],
  // PKCE on every authorization request: a client that leaves it out is refused.
  pkce: { required: () => true },
  claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name"] },
  cookies: { keys: [randomBytes(32).toString("base64url")] },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx: unknown, id: string) {
    const person = accounts.get(id);
    if (!person) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: person.email, email_verified: person.email_verified, name: person.name };
      },
    };
  },
});

// Liveness for scripts and tests (the package has no such route).
provider.use(async (ctx, next) => {
  if (ctx.path === "/health") {
    ctx.body = { status: "ok" };
    return;
  }
  await next();
});

const server = provider.listen(port, "127.0.0.1", () => {
  const line = JSON.stringify([{ type: "oidc", id: "local", name: "Local OIDC", issuer, clientId, clientSecret }]);
  console.log(`oidc-provider: issuer ${issuer}, client ${clientId}, logins: ${[...accounts.keys()].join(", ")} (any password)`);
  console.log(`oidc-provider: redirect URIs ${redirectUris.join(", ")}`);
  console.log(`oidc-provider: start the auth-service with\n  OIDC_PROVIDERS='${line}'`);
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => server.close(() => process.exit(0)));
}
