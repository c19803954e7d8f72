// Mail delivery through nodemailer: SMTP (SMTP_URL, required in production), or, outside
// production without SMTP_URL, a development outbox: every mail is written as an .eml file (plus
// a small .json index entry) under MAIL_DIR, listed by the development mailbox (src/mailbox.ts).
// Sending never runs on the request's path: `send` queues the mail and returns, so a route that
// mails a known address answers as fast as one that mails nobody (no enumeration by timing), and
// a slow or failing SMTP server never fails a request. Failures are retried, then logged without
// the address, the subject or the body (they hold names and links).
import { randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import nodemailer from "nodemailer";
import type { Config } from "./config.js";
import { describeError, safeLog } from "./safe-log.js";

/** What a mail is about (src/mail-messages.ts); the per-address cap counts each kind apart. */
export type MailKind = "verify-email" | "change-email" | "existing-account" | "reset-password" | "invitation";

export interface Mail {
  kind: MailKind;
  to: string;
  subject: string;
  text: string;
  html: string;
}

/** An outbox entry, as the development mailbox lists it. */
export interface StoredMail {
  id: string;
  kind: MailKind;
  to: string;
  subject: string;
  date: string;
  text: string;
  html: string;
}

export interface Mailer {
  /** "smtp", or "outbox" (files under `outboxDir`). */
  readonly transport: "smtp" | "outbox";
  readonly outboxDir?: string;
  /**
   * Queues the mail and returns at once; delivery happens in the background (with retries).
   * `gate`, when given, runs first in the background and may decide not to send (a cap).
   */
  send(mail: Mail, gate?: () => Promise<boolean>): void;
  /** Resolves when every queued mail has been delivered or given up (shutdown, tests). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

/** Delivery attempts per mail, and the wait before the second one (doubling after). */
const ATTEMPTS = 4;
const FIRST_RETRY_MS = 1_000;
/** Sorted by time in a directory listing; random so two mails in one millisecond never collide. */
const OUTBOX_ID = /^\d{13}-[0-9a-f]{12}$/;

function outboxId(): string {
  return `${Date.now().toString().padStart(13, "0")}-${randomBytes(6).toString("hex")}`;
}

/** Written under a temporary name then renamed: the mailbox never lists half a mail. */
function writeAtomically(file: string, data: string | Buffer): void {
  const partial = `${file}.partial`;
  writeFileSync(partial, data, { mode: 0o600 });
  renameSync(partial, file);
}

export function createMailer(config: Pick<Config, "mail" | "devMode">, opts: { retryDelayMs?: number } = {}): Mailer {
  const { smtpUrl, from, dir } = config.mail;
  const outbox = !smtpUrl;
  if (outbox && !config.devMode) throw new Error("the mail outbox is for development only: set SMTP_URL");
  const transporter = smtpUrl
    ? nodemailer.createTransport(smtpUrl)
    : nodemailer.createTransport({ streamTransport: true, buffer: true, newline: "unix" });
  const pending = new Set<Promise<void>>();
  const firstRetry = opts.retryDelayMs ?? FIRST_RETRY_MS;

  async function deliverOnce(mail: Mail): Promise<void> {
    const info = await transporter.sendMail({ from, to: mail.to, subject: mail.subject, text: mail.text, html: mail.html });
    if (!outbox) return;
    // Made at the first mail (private: links in mails are credentials).
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const id = outboxId();
    const stored: StoredMail = { id, kind: mail.kind, to: mail.to, subject: mail.subject, date: new Date().toISOString(), text: mail.text, html: mail.html };
    writeAtomically(path.join(dir, `${id}.eml`), (info as { message: Buffer }).message);
    writeAtomically(path.join(dir, `${id}.json`), JSON.stringify(stored));
  }

  async function deliver(mail: Mail): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await deliverOnce(mail);
        return;
      } catch (err) {
        if (attempt >= ATTEMPTS) {
          safeLog("error", `a ${mail.kind} mail was not delivered after ${ATTEMPTS} attempts:`, describeError(err));
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, firstRetry * 2 ** (attempt - 1)));
      }
    }
  }

  return {
    transport: outbox ? "outbox" : "smtp",
    outboxDir: outbox ? dir : undefined,
    send(mail, gate) {
      const delivery = (async () => {
        if (gate && !(await gate())) return;
        await deliver(mail);
      })()
        .catch((err) => safeLog("error", `a ${mail.kind} mail failed:`, describeError(err)))
        .finally(() => pending.delete(delivery));
      pending.add(delivery);
    },
    async idle() {
      while (pending.size) await Promise.all([...pending]);
    },
    async close() {
      await this.idle();
      transporter.close();
    },
  };
}

/** The development outbox, newest first (src/mailbox.ts). */
export function listOutbox(dir: string): StoredMail[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((name) => name.endsWith(".json") && OUTBOX_ID.test(name.slice(0, -5)))
    .sort()
    .reverse()
    .map((name) => JSON.parse(readFileSync(path.join(dir, name), "utf8")) as StoredMail);
}

/** One outbox entry and its raw message, or null for an id that is not one (no path tricks). */
export function readOutbox(dir: string, id: string): { mail: StoredMail; eml: Buffer } | null {
  if (!OUTBOX_ID.test(id)) return null;
  try {
    const mail = JSON.parse(readFileSync(path.join(dir, `${id}.json`), "utf8")) as StoredMail;
    return { mail, eml: readFileSync(path.join(dir, `${id}.eml`)) };
  } catch {
    return null;
  }
}
