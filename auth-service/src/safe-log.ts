// Log lines without user data, one JSON object per line as the rag-service writes them
// ({ts, level, logger, message, request_id, ...fields}; the request id of the running request is
// added to every line). Database errors (PGlite attaches the query and its parameters, pg the
// row's values in `detail`) are reduced to their class, SQLSTATE and first message line.
import { isAPIError } from "better-auth/api";
import { currentRequestId } from "./request-id.js";

const MESSAGE_MAX = 200;

export function describeError(err: unknown): string {
  if (!(err instanceof Error)) return typeof err === "string" ? err.slice(0, MESSAGE_MAX) : `[${typeof err}]`;
  const code = (err as { code?: unknown }).code;
  const message = (err.message.split("\n")[0] ?? "").slice(0, MESSAGE_MAX);
  const cause = err.cause instanceof Error ? ` (cause: ${describeError(err.cause)})` : "";
  return `${err.name}${typeof code === "string" ? ` [${code}]` : ""}: ${message}${cause}`;
}

const EMAIL = /[^\s@<>"'()]+@[^\s@<>"'()]+\.[^\s@<>"'()]+/g;
const TOKEN_PARAM = /\b(token|code|invitationId)=[^\s&#"']+/gi;
const FRAGMENT_TOKEN = /#(verify-email|reset-password|invitation)=[^\s"']+/gi;
// Better Auth's reset link lands on GET /api/auth/reset-password/<token>.
const PATH_TOKEN = /\/reset-password\/[^\s/?#"']+/gi;

/**
 * Belt and braces: Better Auth's own messages can name the address they concern ("Sign-up attempt
 * for existing email: ..." at info level) and URLs carry tokens; both are masked in every line.
 */
export function redact(text: string): string {
  return text
    .replace(EMAIL, "[email]")
    .replace(TOKEN_PARAM, "$1=[redacted]")
    .replace(FRAGMENT_TOKEN, "#$1=[redacted]")
    .replace(PATH_TOKEN, "/reset-password/[redacted]");
}

export type LogLevel = "debug" | "info" | "warn" | "error";

/**
 * Writes one JSON log line (errors to stderr, the rest to stdout, through console so tests and
 * hosts can capture it); `message` is redacted, `fields` must carry no user data.
 */
export function logLine(level: LogLevel, message: string, fields: Record<string, unknown> = {}): void {
  const requestId = currentRequestId();
  const line = JSON.stringify({
    ts: new Date().toISOString(),
    level,
    logger: "auth_service",
    message: redact(message),
    ...(requestId ? { request_id: requestId } : {}),
    ...fields,
  });
  if (level === "error") console.error(line);
  else if (level === "warn") console.warn(line);
  else console.log(line);
}

/** Strings pass through (Better Auth's own messages); anything else is summarised, never dumped. */
function describeArg(arg: unknown): string {
  if (typeof arg === "string") return arg.slice(0, MESSAGE_MAX);
  if (arg instanceof Error) return describeError(arg);
  if (typeof arg === "number" || typeof arg === "boolean") return String(arg);
  return `[${arg === null ? "null" : typeof arg}]`;
}

/**
 * Messages a Better Auth plugin logs at "error" for a refused client request, not a fault of this
 * service: @better-auth/api-key logs every unknown, revoked, disabled, expired or rate-limited key
 * as `error("Failed to validate API key:", <APIError>)`. Those become one warning naming the
 * refusal's code (never the key); anything else under that message (a database error) stays an error.
 */
const REFUSAL_MESSAGES: Record<string, string> = { "Failed to validate API key:": "API key refused:" };

/** Better Auth `logger.log`. */
export function safeLog(level: LogLevel, message: string, ...args: unknown[]): void {
  const refusal = REFUSAL_MESSAGES[message];
  if (level === "error" && refusal !== undefined && args.length === 1 && isAPIError(args[0])) {
    const code = (args[0] as { body?: { code?: unknown } }).body?.code;
    level = "warn";
    message = refusal;
    args = [typeof code === "string" ? code : String(args[0].status)];
  }
  logLine(level, [message, ...args.map(describeArg)].join(" "));
}
