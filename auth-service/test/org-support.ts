// Shared by the organization suites: accounts, organizations and memberships made through the
// public routes (bearer session tokens), and the access JWT's claims as a verifier sees them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from "jose";
import { BASE_URL, PASSWORD, request, uniqueEmail, type JsonResponse } from "./helpers.js";

const schema = JSON.parse(readFileSync(new URL("../../shared-schemas/jwt-claims.schema.json", import.meta.url), "utf8"));
export const validateClaims = new Ajv2020({ allErrors: true, strict: true }).compile(schema);

export interface Account {
  session: string;
  userId: string;
  email: string;
}

let slugs = 0;
export function uniqueSlug(tag = "org"): string {
  return `${tag}-${process.pid}-${Date.now().toString(36)}-${slugs++}`;
}

/** The routes of one running service, called with a bearer session token. */
export function orgApi(url: string) {
  const call = (method: string, path: string, opts?: Parameters<typeof request>[3]) => request(url, method, path, opts);
  const post = (who: Account, path: string, json: unknown) => call("POST", `/api/auth/organization/${path}`, { token: who.session, json });
  const get = (who: Account, path: string) => call("GET", `/api/auth/organization/${path}`, { token: who.session });

  async function signUp(tag: string): Promise<Account> {
    const email = uniqueEmail(tag);
    const res = await call("POST", "/auth/signup", { json: { email, password: PASSWORD, full_name: tag } });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return { session: res.body.session_token, userId: res.body.user.id, email };
  }

  async function createOrg(owner: Account, name = "Team"): Promise<string> {
    const res = await post(owner, "create", { name, slug: uniqueSlug() });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.id as string;
  }

  async function invite(by: Account, organizationId: string, email: string, role = "member"): Promise<JsonResponse> {
    return post(by, "invite-member", { organizationId, email, role });
  }

  /** `who` joins through an invitation from `by`; returns the member id. */
  async function join(by: Account, who: Account, organizationId: string, role = "member"): Promise<string> {
    const invited = await invite(by, organizationId, who.email, role);
    assert.equal(invited.status, 200, JSON.stringify(invited.body));
    const accepted = await post(who, "accept-invitation", { invitationId: invited.body.id });
    assert.equal(accepted.status, 200, JSON.stringify(accepted.body));
    return accepted.body.member.id as string;
  }

  /** The claims of a fresh access JWT for `who`'s session, verified against the JWKS and the schema. */
  async function claims(who: Account): Promise<JWTPayload> {
    const res = await call("POST", "/auth/token", { token: who.session });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return verifiedClaims(res.body.access_token);
  }

  async function verifiedClaims(token: string): Promise<JWTPayload> {
    const jwks = createRemoteJWKSet(new URL(`${url}/api/auth/jwks`));
    const { payload } = await jwtVerify(token, jwks, { algorithms: ["EdDSA"], audience: "rag-service", issuer: BASE_URL });
    assert.ok(validateClaims(payload), JSON.stringify(validateClaims.errors));
    return payload;
  }

  return { call, post, get, signUp, createOrg, invite, join, claims, verifiedClaims };
}

/** The `orgs` claim as a map (absent = no organizations). */
export function orgsOf(claims: JWTPayload): Record<string, string> {
  const orgs = (claims.orgs ?? []) as { id: string; role: string }[];
  return Object.fromEntries(orgs.map((o) => [o.id, o.role]));
}
