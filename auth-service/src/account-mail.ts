// Accounts that mail their owners, as Better Auth configuration: email verification (sign-up,
// resend, sign-in while unverified, change of email), password reset, the "someone tried to sign
// up with your address" notice, organization invitations, the per-address cap on mails, and the
// rule that a password change ends every other session.
import { createHash } from "node:crypto";
import { createAuthMiddleware, getSessionFromCtx, isAPIError } from "better-auth/api";
import type { BetterAuthPlugin } from "better-auth";
import { decodeJwt } from "jose";
import type { AccountThrottleStore } from "./account-throttle.js";
import type { Config } from "./config.js";
import { failOpen } from "./limiter-health.js";
import { changeEmailMail, existingAccountMail, invitationMail, resetPasswordMail, verifyEmailMail } from "./mail-messages.js";
import type { Mail, Mailer } from "./mailer.js";
import type { InvitationSender } from "./organizations.js";
import { safeLog } from "./safe-log.js";

type MailConfig = Pick<Config, "appUrl" | "mail" | "emailVerification" | "emailVerificationExpiresIn" | "passwordResetExpiresIn">;

/**
 * Sends `mail` unless its address already got `perAddressMax` mails of that kind within the
 * window (counted atomically in the account-throttle store: memory, the database or Redis, keyed
 * by a hash of the address). Over the cap the mail is dropped and the route answers as usual, so
 * the cap reveals nothing about the address either. The count runs in the background, with the
 * delivery: a route answers in the same time whether it mails or not.
 */
export function cappedSender(config: Pick<Config, "mail">, mailer: Mailer, counters: AccountThrottleStore) {
  const windowMs = config.mail.perAddressWindowSeconds * 1000;
  return (mail: Mail) => {
    const key = `mail:${mail.kind}:${createHash("sha256").update(mail.to.trim().toLowerCase()).digest("hex")}`;
    mailer.send(mail, async () => {
      // Whatever the store's state, a mail that cannot be counted is still sent (fail open, as the limiters).
      const count = await failOpen("mail cap", () => counters.recordFailure(key, Date.now(), windowMs, Math.max(windowMs, 3_600_000)), null);
      if (count && count.failures > config.mail.perAddressMax) {
        safeLog("warn", `a ${mail.kind} mail was dropped: its address got ${config.mail.perAddressMax} of them within ${config.mail.perAddressWindowSeconds} s`);
        return false;
      }
      return true;
    });
  };
}

/** Better Auth options (`emailAndPassword` additions, `emailVerification`, `user`, `verification`). */
export function accountMailOptions(config: MailConfig, send: (mail: Mail) => void) {
  const required = config.emailVerification === "required";
  return {
    emailAndPassword: {
      requireEmailVerification: required,
      // Reset tokens: random, stored hashed (below), single use, `passwordResetExpiresIn` seconds.
      resetPasswordTokenExpiresIn: config.passwordResetExpiresIn,
      revokeSessionsOnPasswordReset: true,
      sendResetPassword: async ({ user, token }: { user: { email: string }; token: string }) => {
        send(resetPasswordMail(config.appUrl, user.email, token, config.passwordResetExpiresIn));
      },
      // Only called when verification is required: sign-up then answers the same for a taken
      // address (Better Auth returns a look-alike user and no session), and its owner is told.
      onExistingUserSignUp: async ({ user }: { user: { email: string } }) => {
        send(existingAccountMail(config.appUrl, user.email));
      },
    },
    emailVerification: {
      sendOnSignUp: true,
      // A required-but-unverified sign-in is refused (403 EMAIL_NOT_VERIFIED) with a fresh link.
      sendOnSignIn: required,
      autoSignInAfterVerification: true,
      expiresIn: config.emailVerificationExpiresIn,
      sendVerificationEmail: async ({ user, token }: { user: { email: string }; token: string }) => {
        // A change of email sends the new address a token naming it (`updateTo`): the account
        // keeps its address until that link is followed.
        const changing = typeof decodeJwt(token).updateTo === "string";
        send((changing ? changeEmailMail : verifyEmailMail)(config.appUrl, user.email, token, config.emailVerificationExpiresIn));
      },
    },
    user: { changeEmail: { enabled: true } },
    // A database dump holds no usable reset token.
    verification: { storeIdentifier: { default: "plain" as const, overrides: { "reset-password:": "hashed" as const } } },
  };
}

/** Organization invitations as mails with an accept link (src/organizations.ts calls it). */
export function mailInvitationSender(config: Pick<Config, "appUrl">, send: (mail: Mail) => void): InvitationSender {
  return async (message) => {
    send(invitationMail(config.appUrl, message.email, {
      id: message.invitationId,
      role: message.role,
      organizationName: message.organizationName,
      inviterName: message.inviterName,
      expiresAt: message.expiresAt,
    }));
  };
}

interface StoredInvitation {
  id: string;
  email: string;
  status: string;
  expiresAt: Date | string;
}

const INVITATION_ROUTES = new Set(["/organization/accept-invitation", "/organization/reject-invitation", "/organization/get-invitation"]);

/**
 * Better Auth answers INVITATION_NOT_FOUND for an invitation that is expired, canceled, declined
 * or already accepted. Its recipient (only they: nobody else learns anything about it) gets the
 * reason instead: 410 INVITATION_EXPIRED / INVITATION_CANCELED / INVITATION_REJECTED, 409
 * INVITATION_ALREADY_ACCEPTED. Someone else's pending invitation stays Better Auth's 403
 * YOU_ARE_NOT_THE_RECIPIENT_OF_THE_INVITATION.
 */
export function invitationErrors(): BetterAuthPlugin {
  return {
    id: "invitation-errors",
    // After Better Auth refused (the session is readable there: the bearer plugin's header is applied).
    hooks: {
      after: [
        {
          matcher: (ctx) => INVITATION_ROUTES.has(ctx.path ?? ""),
          handler: createAuthMiddleware(async (ctx) => {
            const returned = ctx.context.returned;

            if (!isAPIError(returned) || returned.body?.code !== "INVITATION_NOT_FOUND") return;
            const id = ctx.path === "/organization/get-invitation"
              ? (ctx.query as { id?: unknown } | undefined)?.id
              : (ctx.body as { invitationId?: unknown } | undefined)?.invitationId;
            if (typeof id !== "string" || !id) return;
            const session = await getSessionFromCtx(ctx);
            if (!session) return;
            const invitation = await ctx.context.adapter.findOne<StoredInvitation>({ model: "invitation", where: [{ field: "id", value: id }] });
            if (!invitation || invitation.email.toLowerCase() !== session.user.email.toLowerCase()) return;
            const refusal = invitationRefusal(invitation, new Date());
            // A Response, not an APIError: the answer keeps the status of the error a hook throws.
            if (refusal) return Response.json({ code: refusal.code, message: refusal.message }, { status: refusal.status });
          }),
        },
      ],
    },
  };
}

export function invitationRefusal(invitation: Pick<StoredInvitation, "status" | "expiresAt">, now: Date) {
  switch (invitation.status) {
    case "accepted":
      return { status: 409, code: "INVITATION_ALREADY_ACCEPTED", message: "this invitation was already accepted" };
    case "canceled":
      return { status: 410, code: "INVITATION_CANCELED", message: "this invitation was withdrawn by the organization" };
    case "rejected":
      return { status: 410, code: "INVITATION_REJECTED", message: "this invitation was declined" };
  }
  if (new Date(invitation.expiresAt) < now) {
    return { status: 410, code: "INVITATION_EXPIRED", message: "this invitation has expired: ask the organization for a new one" };
  }
  return null;
}

/** A password change ends every other session, whatever `revokeOtherSessions` the client sent. */
export function passwordChangeEndsOtherSessions(): BetterAuthPlugin {
  return {
    id: "password-change-ends-sessions",
    hooks: {
      before: [
        {
          matcher: (ctx) => ctx.path === "/change-password",
          handler: createAuthMiddleware(async (ctx) => {
            const body = ctx.body && typeof ctx.body === "object" ? ctx.body : {};
            return { context: { body: { ...body, revokeOtherSessions: true } } };
          }),
        },
      ],
    },
  };
}
