// A real SMTP server (the `smtp-server` package) on a free loopback port that keeps every mail
// the service sends, parsed by `mailparser`, and the links in them, followed as a person would.
import assert from "node:assert/strict";
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { simpleParser, type ParsedMail } from "mailparser";
import { SMTPServer } from "smtp-server";

export interface CaughtMail {
  to: string;
  from: string;
  subject: string;
  text: string;
  html: string;
  /** The first link to the app (APP_URL) in the text part. */
  link: string;
}

export interface Inbox {
  smtpUrl: string;
  mails: CaughtMail[];
  /** Resolves with the first mail (already caught or still to come) to `to` matching `subject`. */
  next(to: string, subject?: RegExp, timeoutMs?: number): Promise<CaughtMail>;
  /** Mails caught for `to` so far. */
  to(address: string): CaughtMail[];
  close(): Promise<void>;
}

function linkIn(text: string): string {
  return text.match(/https?:\/\/\S+#\S+/)?.[0] ?? "";
}

function toCaught(parsed: ParsedMail, envelopeTo: string): CaughtMail {
  return {
    to: envelopeTo.toLowerCase(),
    from: parsed.from?.text ?? "",
    subject: parsed.subject ?? "",
    text: parsed.text ?? "",
    html: typeof parsed.html === "string" ? parsed.html : "",
    link: linkIn(parsed.text ?? ""),
  };
}

export async function startInbox(): Promise<Inbox> {
  const mails: CaughtMail[] = [];
  const waiters: Array<{ match: (m: CaughtMail) => boolean; resolve: (m: CaughtMail) => void }> = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS", "AUTH"],
    logger: false,
    async onData(stream, session, callback) {
      try {
        const parsed = await simpleParser(stream);
        for (const rcpt of session.envelope.rcptTo) {
          const mail = toCaught(parsed, rcpt.address);
          mails.push(mail);
          for (const waiter of waiters.filter((w) => w.match(mail))) {
            waiters.splice(waiters.indexOf(waiter), 1);
            waiter.resolve(mail);
          }
        }
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
  server.listen(0, "127.0.0.1");
  await once(server.server, "listening");
  const port = (server.server.address() as AddressInfo).port;
  const matcher = (to: string, subject?: RegExp) => (m: CaughtMail) => m.to === to.toLowerCase() && (!subject || subject.test(m.subject));
  return {
    smtpUrl: `smtp://127.0.0.1:${port}`,
    mails,
    to: (address) => mails.filter((m) => m.to === address.toLowerCase()),
    next(to, subject, timeoutMs = 20_000) {
      const match = matcher(to, subject);
      const already = mails.find(match);
      if (already) return Promise.resolve(already);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no mail to ${to} matching ${subject} within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ match, resolve: (m) => (clearTimeout(timer), resolve(m)) });
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The value after `#<action>=` in an app link (what the example app reads). */
export function fragmentValue(link: string, action: string): string {
  const hash = new URL(link).hash.slice(1);
  assert.ok(hash.startsWith(`${action}=`), `${link} is not a ${action} link`);
  return decodeURIComponent(hash.slice(action.length + 1));
}

/** Every mail is plain text plus simple HTML, both carrying the same app link. */
export function assertWellFormed(mail: CaughtMail, appUrl: string): void {
  assert.ok(mail.link.startsWith(appUrl.split("#")[0]!), `${mail.subject}: link ${mail.link} does not lead to the app`);
  assert.ok(mail.html.includes(`href="${mail.link.replace(/&/g, "&amp;")}"`), `${mail.subject}: the HTML part lacks the link`);
  assert.ok(!/undefined|null|\[object/.test(mail.text + mail.html), `${mail.subject}: a placeholder leaked into the mail`);
}

/** Median of a list of numbers. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Times `a` and `b` alternately, `rounds` times each (so load on the machine hits both alike);
 * returns the durations in milliseconds.
 */
export async function timeAlternately(rounds: number, a: (i: number) => Promise<unknown>, b: (i: number) => Promise<unknown>) {
  const times = { a: [] as number[], b: [] as number[] };
  for (let i = 0; i < rounds; i++) {
    for (const [name, fn] of [["a", a], ["b", b]] as const) {
      const start = performance.now();
      await fn(i);
      times[name].push(performance.now() - start);
    }
  }
  return times;
}
