// Request plumbing shared by app.ts and routes.ts: the trusted client-IP header, forwarding a
// request into Better Auth's handler, and the standard Retry-After header on 429.
import type { Context } from "hono";
import { getConnInfo } from "@hono/node-server/conninfo";
import { CLIENT_IP_HEADER, type Auth } from "./auth.js";

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

/** Runs the incoming request through `auth.handler` unchanged, except for the client-IP header. */
export async function proxyToAuth(auth: Auth, c: Context, trustProxies: boolean): Promise<Response> {
  const req = c.req.raw;
  const hasBody = req.method !== "GET" && req.method !== "HEAD";
  const init: RequestInit & { duplex?: "half" } = {
    method: req.method,
    headers: headersWithClientIp(c, trustProxies),
    ...(hasBody ? { body: await req.arrayBuffer() } : {}),
  };
  return withRetryAfter(await auth.handler(new Request(req.url, init)));
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
  return withRetryAfter(await auth.handler(new Request(url, init)));
}
