// The mails this service sends, each as plain text plus simple HTML, with the one link the app
// needs. Links lead to the app (APP_URL) with the token in the fragment (`#reset-password=...`):
// a fragment is never sent to the app's web server, so tokens stay out of its access logs.
import type { Mail } from "./mailer.js";

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (value: string) => value.replace(/[&<>"']/g, (c) => ESCAPES[c]!);

/** The app's link for an action: APP_URL (its path and query kept) with `#<action>=<value>`. */
export function appLink(appUrl: string, action: "verify-email" | "reset-password" | "invitation" | "forgot-password", value = ""): string {
  const url = new URL(appUrl);
  url.hash = value ? `${action}=${encodeURIComponent(value)}` : action;
  return url.toString();
}

function hours(seconds: number): string {
  if (seconds % 3600 === 0) return seconds === 3600 ? "1 hour" : `${seconds / 3600} hours`;
  return seconds < 120 ? `${seconds} seconds` : `${Math.round(seconds / 60)} minutes`;
}

/** Paragraphs, one call-to-action link, a closing note: rendered as text and as HTML. */
function compose(kind: Mail["kind"], to: string, subject: string, lines: string[], action: { label: string; url: string }, note: string): Mail {
  const text = [...lines, "", `${action.label}: ${action.url}`, "", note, ""].join("\n");
  const html = [
    "<!doctype html><html><body style=\"font-family: sans-serif; line-height: 1.5\">",
    ...lines.map((line) => `<p>${escapeHtml(line)}</p>`),
    `<p><a href="${escapeHtml(action.url)}">${escapeHtml(action.label)}</a></p>`,
    `<p style="color: #666; font-size: 0.9em">${escapeHtml(note)}</p>`,
    "</body></html>",
  ].join("\n");
  return { kind, to, subject, text, html };
}

export function verifyEmailMail(appUrl: string, to: string, token: string, expiresIn: number): Mail {
  return compose("verify-email", to, "Confirm your email address", [
    "Welcome! Confirm that this is your email address to finish setting up your account.",
  ], { label: "Confirm my email address", url: appLink(appUrl, "verify-email", token) },
  `The link works for ${hours(expiresIn)}. If you did not create an account, ignore this mail: nothing happens without the link.`);
}

export function changeEmailMail(appUrl: string, to: string, token: string, expiresIn: number): Mail {
  return compose("change-email", to, "Confirm your new email address", [
    "You asked to use this address for your account. Your account keeps its current address until you confirm this one.",
  ], { label: "Confirm my new email address", url: appLink(appUrl, "verify-email", token) },
  `The link works for ${hours(expiresIn)}. If you did not ask for this, ignore this mail.`);
}

export function existingAccountMail(appUrl: string, to: string): Mail {
  return compose("existing-account", to, "Someone tried to sign up with your email address", [
    "Someone (perhaps you) tried to create a new account with this email address, but you already have an account.",
    "No new account was created and nothing about your account changed. If you forgot your password, you can choose a new one.",
  ], { label: "Reset my password", url: appLink(appUrl, "forgot-password") },
  "If this was not you, you can ignore this mail.");
}

export function resetPasswordMail(appUrl: string, to: string, token: string, expiresIn: number): Mail {
  return compose("reset-password", to, "Reset your password", [
    "Someone (hopefully you) asked to reset the password of your account.",
    "Choosing a new password signs you out everywhere else.",
  ], { label: "Choose a new password", url: appLink(appUrl, "reset-password", token) },
  `The link works once, for ${hours(expiresIn)}. If you did not ask for this, ignore this mail: your password stays as it is.`);
}

export function invitationMail(
  appUrl: string,
  to: string,
  invitation: { id: string; role: string; organizationName: string; inviterName: string; expiresAt: Date },
): Mail {
  return compose("invitation", to, `You are invited to join ${invitation.organizationName}`, [
    `${invitation.inviterName} invited you to join ${invitation.organizationName} as ${invitation.role}.`,
    "Open the link, sign in (or create an account with this email address), and accept the invitation.",
  ], { label: "Open the invitation", url: appLink(appUrl, "invitation", invitation.id) },
  `The invitation expires on ${invitation.expiresAt.toUTCString()}. If you do not know the sender, ignore this mail.`);
}
