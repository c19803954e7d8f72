// GET /api/auth/access-token/user: the user behind an access JWT, only while the session the
// token was minted from (`sid`) still exists, so logout ends the token here at once. A Better
// Auth endpoint so /auth/me goes through the same router, rate limiter and hooks as the rest.
import { APIError, createAuthEndpoint } from "better-auth/api";
import type { BetterAuthPlugin } from "better-auth";
import { verifyJWT } from "better-auth/plugins";

type JwtOptions = Parameters<typeof verifyJWT>[1];

function unauthorized(message: string): APIError {
  return new APIError("UNAUTHORIZED", { code: "INVALID_TOKEN", message });
}

export function accessTokenUser(jwtOptions: JwtOptions): BetterAuthPlugin {
  return {
    id: "access-token-user",
    endpoints: {
      accessTokenUser: createAuthEndpoint("/access-token/user", { method: "GET", requireHeaders: true }, async (ctx) => {
        const token = ctx.headers?.get("authorization")?.match(/^Bearer\s+(.+)$/i)?.[1]?.trim();
        if (!token) throw unauthorized("an access token is required");
        const payload = await verifyJWT(token, jwtOptions);
        if (!payload?.sub || typeof payload.sid !== "string") throw unauthorized("the access token is invalid or expired");
        const session = await ctx.context.adapter.findOne<{ userId: string; expiresAt: Date | string }>({
          model: "session",
          where: [{ field: "id", value: payload.sid }],
        });
        if (!session || session.userId !== payload.sub || new Date(session.expiresAt).getTime() <= Date.now()) {
          throw unauthorized("the session of this access token has ended");
        }
        const user = await ctx.context.internalAdapter.findUserById(payload.sub);
        if (!user) throw unauthorized("the token's user no longer exists");
        return ctx.json({ user });
      }),
    },
  };
}
