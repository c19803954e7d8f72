// The development mailbox: the outbox's mails (src/mailer.ts, no SMTP_URL, outside production)
// as pages on the auth-service. GET /dev/mailbox lists them (JSON with `Accept:
// application/json`), GET /dev/mailbox/<id> shows one with its links, /dev/mailbox/<id>.eml is the
// raw message. app.ts mounts it only then: in production, or with SMTP_URL, /dev/* is a 404.
import { Hono } from "hono";
import { errorBody } from "./errors.js";
import { listOutbox, readOutbox, type StoredMail } from "./mailer.js";

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (value: string) => value.replace(/[&<>"']/g, (c) => ESCAPES[c]!);

/** Plain text with its http(s) links made clickable (everything else escaped). */
function linkified(text: string): string {
  return text
    .split(/(https?:\/\/[^\s<>"']+)/g)
    .map((part, i) => (i % 2 === 1 ? `<a href="${escapeHtml(part)}">${escapeHtml(part)}</a>` : escapeHtml(part)))
    .join("");
}

/** The pages show mail bodies: nothing they contain may run (no scripts, no remote content). */
const PAGE_HEADERS = { "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'" };

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:60em}td,th{padding:.3em .8em;text-align:left}pre{white-space:pre-wrap;background:#f6f6f6;padding:1em}</style>
</head><body><p><strong>Development mailbox</strong>: mails this auth-service would have sent (no SMTP_URL). Never served in production.</p>
${body}</body></html>`;
}

function summary(mail: StoredMail) {
  return { id: mail.id, kind: mail.kind, to: mail.to, subject: mail.subject, date: mail.date };
}

export function mailboxRoutes(dir: string) {
  const r = new Hono();

  r.get("/", (c) => {
    const mails = listOutbox(dir);
    if ((c.req.header("accept") ?? "").includes("application/json")) return c.json({ mails: mails.map(summary) });
    const rows = mails
      .map((m) => `<tr><td>${escapeHtml(m.date)}</td><td>${escapeHtml(m.to)}</td><td><a href="mailbox/${m.id}">${escapeHtml(m.subject)}</a></td></tr>`)
      .join("\n");
    const body = mails.length
      ? `<table><tr><th>date (UTC)</th><th>to</th><th>subject</th></tr>\n${rows}</table>`
      : "<p>No mail yet.</p>";
    return c.html(page("Mailbox", `<p>Folder: <code>${escapeHtml(dir)}</code></p>${body}`), 200, PAGE_HEADERS);
  });

  r.get("/:file", (c) => {
    const file = c.req.param("file");
    const raw = file.endsWith(".eml");
    const found = readOutbox(dir, raw ? file.slice(0, -4) : file);
    if (!found) return c.json(errorBody("not_found", "no such mail"), 404);
    if (raw) return c.body(new Uint8Array(found.eml), 200, { "Content-Type": "message/rfc822", "Content-Disposition": `attachment; filename="${found.mail.id}.eml"` });
    if ((c.req.header("accept") ?? "").includes("application/json")) return c.json(found.mail);
    const m = found.mail;
    const body = `<p><a href="../mailbox">All mails</a> · <a href="${m.id}.eml">raw .eml</a></p>
<table><tr><th>to</th><td>${escapeHtml(m.to)}</td></tr><tr><th>subject</th><td>${escapeHtml(m.subject)}</td></tr><tr><th>date</th><td>${escapeHtml(m.date)}</td></tr></table>
<pre>${linkified(m.text)}</pre>`;
    return c.html(page(m.subject, body), 200, PAGE_HEADERS);
  });

  return r;
}
