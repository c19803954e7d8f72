// Request plumbing shared by app.ts and routes.ts: the request id and access log, the trusted
// client-IP header, forwarding a request into Better Auth's handler, the service's error envelope
// on Better Auth's answers, and the standard Retry-After header on 429.
import type { Context, MiddlewareHandler } from "hono";
import { getConnInfo } from "@hono/node-server/conninfo";
import { CLIENT_IP_HEADER, type Auth } from "./auth.js";
import { errorBody } from "./errors.js";
import { REQUEST_ID_HEADER, requestIdFrom, withRequestId } from "./request-id.js";
import { logLine } from "./safe-log.js";

/**
 * The first middleware: runs the rest of the request under its id (src/request-id.ts), echoes the
 * id in X-Request-ID and, with `accessLog`, writes one line per request as the rag-service does
 * (method, route, path, status, latency; the path without its query, which carries tokens).
 */
export function requestContext({ accessLog }: { accessLog: boolean }): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    const requestId = requestIdFrom(c.req.header(REQUEST_ID_HEADER));
    await withRequestId(requestId, async () => {
      await next();
      c.res.headers.set(REQUEST_ID_HEADER, requestId);
      if (!accessLog) return;
      logLine("info", "request", {
        logger: "auth_service.access",
        method: c.req.method,
        // The last route the request reached, e.g. "/auth/api-keys/:id" or "/api/auth/*".
        route: c.req.routePath,
        path: c.req.path,
        status: c.res.status,
        latency_ms: Math.round((performance.now() - started) * 100) / 100,
      });
    });
  };
}

/**
 * Copies the request headers, replacing CLIENT_IP_HEADER with the socket peer address, or
 * "<x-forwarded-for>, <peer>" when trusted proxies are configured (Better Auth walks that chain
 * right to left and skips the trusted hops). A client can never choose its own rate-limit key.
 */
export function headersWithClientIp(c: Context, trustProxies: boolean): Headers {
  const headers = new Headers(c.req.raw.headers);
  headers.delete(CLIENT_IP_HEADER);
  let peer: string | undefined;
  try {
    peer = getConnInfo(c).remote.address;
  } catch {
    peer = undefined; // not served by @hono/node-server (e.g. app.fetch in-process)
  }
  if (peer) {
    const xff = c.req.header("x-forwarded-for");
    headers.set(CLIENT_IP_HEADER, trustProxies && xff ? `${xff}, ${peer}` : peer);
  }
  return headers;
}

/** Better Auth answers 429 with X-Retry-After; add the standard Retry-After as well. */
export function withRetryAfter(res: Response): Response {
  if (res.status !== 429 || res.headers.has("retry-after")) return res;
  const headers = new Headers(res.headers);
  headers.set("Retry-After", res.headers.get("x-retry-after") ?? "60");
  return new Response(res.body, { status: res.status, statusText: res.statusText, headers });
}

/**
 * `auth.handler` with the standard Retry-After on 429, and one log line for a 5xx: Better Auth no
 * longer logs its own errors (src/auth.ts `onAPIError`), and the cause it logged, if any, has gone
 * through src/safe-log.ts already.
 */
async function callAuth(auth: Auth, request: Request): Promise<Response> {
  const res = withRetryAfter(await auth.handler(request));
  if (res.status >= 500) logLine("error", `Better Auth answered ${res.status} on ${request.method} ${new URL(request.url).pathname}`);
  return res;
}

/** The code of an error Better Auth sent without one: the rag-service's name for its status. */
const CODE_OF_STATUS: Record<number, string> = {
  400: "bad_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  410: "gone",
  413: "payload_too_large",
  415: "unsupported_media_type",
  422: "unprocessable",
  429: "rate_limited",
};

/** "USER_ALREADY_EXISTS_USE_ANOTHER_EMAIL" -> "user_already_exists_use_another_email": the house style. */
function houseCode(code: string): string {
  return code.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "");
}

/**
 * Gives a Better Auth error answer (>= 400) the service's envelope `{"error": {"code", "message",
 * "request_id"}}`, the code in the house's snake_case. Better Auth's own top-level `code` and
 * `message` stay beside it on 4xx answers, on purpose: Better Auth's client library (better-fetch)
 * hands the parsed body to the app as its `error`, and apps written to its documentation read
 * `error.code` (compared with `authClient.$ERROR_CODES`) and `error.message`; dropping them would
 * break every such app for no gain. A 5xx keeps nothing of Better Auth's body (it may describe
 * internals). OAuth 2.0 / OpenID errors (`{"error": "invalid_grant", "error_description"}`, RFC 6749
 * section 5.2) are a protocol's wire format that OAuth clients parse: they pass unchanged.
 */
export async function withErrorEnvelope(res: Response): Promise<Response> {
  if (res.status < 400) return res;
  const text = await res.text();
  let original: Record<string, unknown> = {};
  try {
    const parsed: unknown = text ? JSON.parse(text) : {};
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) original = parsed as Record<string, unknown>;
  } catch {
    // not JSON: the envelope is built from the status alone
  }
  const headers = new Headers(res.headers);
  const init = { status: res.status, statusText: res.statusText, headers };
  if (typeof original.error === "string") return new Response(text, init);
  let body: Record<string, unknown>;
  if (res.status >= 500) {
    body = errorBody("internal_error", "internal server error");
  } else {
    const statusCode = CODE_OF_STATUS[res.status] ?? "bad_request";
    const code = typeof original.code === "string" && original.code ? houseCode(original.code) : statusCode;
    const message = typeof original.message === "string" && original.message ? original.message : statusCode.replaceAll("_", " ");
    body = { ...original, ...errorBody(code, message) };
  }
  headers.delete("content-length");
  headers.set("content-type", "application/json");
  return new Response(JSON.stringify(body), init);
}

/**
 * Runs the incoming request through `auth.handler` unchanged, except for the client-IP header;
 * its answer gets the standard Retry-After and, when it is an error, the service's envelope.
 */
export async function proxyToAuth(auth: Auth, c: Context, trustProxies: boolean): Promise<Response> {
  const req = c.req.raw;
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  const init: RequestInit & { duplex?: "half" } = {
    method: req.method,
    headers: headersWithClientIp(c, trustProxies),
    ...(hasBody ? { body: await req.arrayBuffer() } : {}),
  };
  return withErrorEnvelope(await callAuth(auth, new Request(req.url, init)));
}

/**
 * Sends a request to a Better Auth route (e.g. "/sign-in/email") on behalf of a contract route, so
 * the rate limiter, hooks and validation apply exactly as on /api/auth/*. Only the client IP, the
 * user agent and the credentials named in `carry` ("authorization", "cookie" or "x-api-key") go along,
 * or a `cookie` the contract route built itself.
 */
export async function forwardToAuth(
  auth: Auth,
  c: Context,
  trustProxies: boolean,
  request: { method: "GET" | "POST"; path: string; body?: unknown; carry?: "authorization" | "cookie" | "x-api-key"; cookie?: string },
): Promise<Response> {
  const incoming = headersWithClientIp(c, trustProxies);
  const headers = new Headers();
  // A cookie goes with its Origin/Referer: Better Auth checks them on state-changing routes.
  const credentials = request.carry === "cookie" ? ["cookie", "origin", "referer"] : request.carry ? [request.carry] : [];
  for (const name of [CLIENT_IP_HEADER, "user-agent", ...credentials]) {
    const value = incoming.get(name);
    if (value) headers.set(name, value);
  }
  if (request.cookie !== undefined) {
    // A cookie this service builds from the request body (never one the client's browser holds):
    // the service itself is the origin of that call.
    headers.set("cookie", request.cookie);
    headers.set("origin", new URL(auth.options.baseURL as string).origin);
  }
  const init: RequestInit = { method: request.method, headers };
  if (request.method === "POST") {
    headers.set("content-type", "application/json");
    init.body = JSON.stringify(request.body ?? {});
  }
  const url = new URL(`/api/auth${request.path}`, c.req.url);
  return callAuth(auth, new Request(url, init));
}
