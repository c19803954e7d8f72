// Input bounds and the password policy, enforced in a Better Auth `before` hook so that Better
// Auth's own routes (/api/auth/*) and the seed-contract routes (which forward into them) agree.
import { dictionary } from "@zxcvbn-ts/language-common";
import { APIError } from "better-auth/api";
import { ORG_ROLES, type OrgRole } from "./organizations.js";

/** RFC 5321 path limit; a longer address also makes every JWT/API call carry it. */
export const EMAIL_MAX = 254;
export const NAME_MIN = 1;
export const NAME_MAX = 200;
export const IMAGE_MAX = 2048;
export const PASSWORD_MIN = 12;
export const PASSWORD_MAX = 128;
/** Organization slugs appear in URLs. */
export const SLUG_MAX = 100;

// C0 controls (NUL included: PostgreSQL text cannot hold it) and DEL.
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

/**
 * The 49k most common passwords of zxcvbn-ts's "common" dictionary (@zxcvbn-ts/language-common,
 * pinned in package.json; shipped with the package, nothing is fetched at run time).
 */
const COMMON_PASSWORDS = new Set(dictionary["passwords-common"]);

/** Routes that set a new password, and the body field that carries it. */
const NEW_PASSWORD_FIELD: Record<string, string> = {
  "/sign-up/email": "password",
  "/change-password": "newPassword",
  "/reset-password": "newPassword",
  "/set-password": "newPassword",
};

/**
 * Routes that give a member a role: exactly one of ORG_ROLES (Better Auth would also take a list,
 * stored as "admin,member"; one role per member keeps the token's `orgs` claim unambiguous).
 */
const ROLE_ROUTES = new Set(["/organization/invite-member", "/organization/update-member-role"]);

/** Why `password` may not be used as a new password, or null when it is acceptable. */
export function passwordProblem(password: unknown): string | null {
  if (typeof password !== "string") return "password must be a string";
  if (password.length < PASSWORD_MIN || password.length > PASSWORD_MAX) {
    return `password must be ${PASSWORD_MIN} to ${PASSWORD_MAX} characters`;
  }
  if (password.trim() === "") return "password must not be only whitespace";
  if (COMMON_PASSWORDS.has(password.toLowerCase())) return "password is too common; choose another";
  return null;
}

/** Why `name` is not a valid display name, or null. */
export function nameProblem(name: unknown): string | null {
  const trimmed = typeof name === "string" ? name.trim() : "";
  if (trimmed.length < NAME_MIN || trimmed.length > NAME_MAX) return `name must be ${NAME_MIN} to ${NAME_MAX} characters`;
  return null;
}

export function hasControlChars(value: string): boolean {
  return CONTROL_CHARS.test(value);
}

function invalid(message: string, status: "BAD_REQUEST" | "UNPROCESSABLE_ENTITY" = "UNPROCESSABLE_ENTITY"): APIError {
  return new APIError(status, { code: "INVALID_INPUT", message });
}

/**
 * Throws for the first problem in a request body (top-level fields; /organization/update's
 * changes are nested under `data`):
 * 422 for control characters, 400 (as Better Auth's own validation) for lengths and the policy.
 */
export function checkBody(path: string, body: unknown): void {
  if (!body || typeof body !== "object" || Array.isArray(body)) return;
  const fields = body as Record<string, unknown>;
  for (const [key, value] of Object.entries(fields)) {
    if (typeof value === "string" && hasControlChars(value)) throw invalid(`${key} must not contain control characters`);
  }
  for (const key of ["email", "newEmail"]) {
    const value = fields[key];
    if (typeof value === "string" && value.length > EMAIL_MAX) throw invalid(`${key} must be at most ${EMAIL_MAX} characters`, "BAD_REQUEST");
  }
  if (fields.name !== undefined) {
    const problem = nameProblem(fields.name);
    if (problem) throw invalid(problem, "BAD_REQUEST");
  }
  for (const key of ["image", "logo"]) {
    const value = fields[key];
    if (typeof value === "string" && value.length > IMAGE_MAX) throw invalid(`${key} must be at most ${IMAGE_MAX} characters`, "BAD_REQUEST");
  }
  if (typeof fields.slug === "string" && (fields.slug.trim().length < 1 || fields.slug.length > SLUG_MAX)) {
    throw invalid(`slug must be 1 to ${SLUG_MAX} characters`, "BAD_REQUEST");
  }
  if (ROLE_ROUTES.has(path) && !ORG_ROLES.includes(fields.role as OrgRole)) {
    throw invalid(`role must be one of: ${ORG_ROLES.join(", ")}`, "BAD_REQUEST");
  }
  const passwordField = NEW_PASSWORD_FIELD[path];
  if (passwordField && fields[passwordField] !== undefined) {
    const problem = passwordProblem(fields[passwordField]);
    if (problem) throw invalid(problem, "BAD_REQUEST");
  }
  if (path === "/organization/update") checkBody("", fields.data);
}
