// The two pages of the OAuth authorization flow (src/oauth-server.ts): sign-in and consent.
// Plain HTML plus one script: both post to Better Auth with the signed authorization request
// (`oauth_query`, the page's own query string) and follow the `url` it answers with — the
// consent page after signing in, then the client's redirect_uri with the code (or access_denied).

/** The scopes as the consent page words them; a scope not listed is shown by name. */
const SCOPE_TEXT: Record<string, string> = {
  read: "Search and read your documents, collections and chat history",
  write: "Save, upload and delete documents in your name",
  offline_access: "Stay connected until you revoke its access (refresh tokens)",
  openid: "Know your account id",
  profile: "See your name",
  email: "See your email address",
};

export interface ConsentDetails {
  clientName: string;
  clientUri?: string;
  scopes: string[];
  resources: string[];
  signedInAs?: string;
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

function page(title: string, pageName: string, script: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)}</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 26rem; margin: 3rem auto; padding: 0 1rem; color: #1b1b1b; }
label { display: block; margin: .8rem 0 .2rem; }
input { width: 100%; padding: .5rem; box-sizing: border-box; }
button { margin-top: 1rem; padding: .5rem 1.2rem; margin-right: .5rem; }
li { margin: .3rem 0; }
[role=alert] { color: #a40000; min-height: 1.2em; }
.muted { color: #5a5a5a; font-size: .9em; }
</style>
<script src="${escapeHtml(script)}" defer></script>
</head>
<body data-page="${pageName}">
${body}
</body>
</html>`;
}

export function signInPage(script: string): string {
  return page(
    "Sign in",
    "sign-in",
    script,
    `<h1>Sign in</h1>
<p class="muted">An application asks to use your documents. Sign in to continue.</p>
<form id="sign-in">
<label for="email">Email</label>
<input id="email" name="email" type="email" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
<form id="two-factor" hidden>
<label for="code">Code from your authenticator app</label>
<input id="code" name="code" autocomplete="one-time-code" required>
<label><input type="checkbox" id="backup-code" name="backup"> This is a backup code</label>
<button type="submit">Verify</button>
</form>
<p id="error" role="alert"></p>`,
  );
}

export function consentPage(script: string, details: ConsentDetails): string {
  const scopes = details.scopes.map((scope) => `<li>${escapeHtml(SCOPE_TEXT[scope] ?? scope)} <span class="muted">(${escapeHtml(scope)})</span></li>`);
  const resources = details.resources.map((resource) => `<li>${escapeHtml(resource)}</li>`);
  const who = details.signedInAs ? `<p class="muted">Signed in as ${escapeHtml(details.signedInAs)}</p>` : "";
  const site = details.clientUri ? ` <span class="muted">(${escapeHtml(details.clientUri)})</span>` : "";
  return page(
    "Allow access?",
    "consent",
    script,
    `<h1>Allow access?</h1>
${who}
<p><strong id="client-name">${escapeHtml(details.clientName)}</strong>${site} asks to:</p>
<ul id="scopes">${scopes.join("")}</ul>
${resources.length ? `<p class="muted">at</p><ul>${resources.join("")}</ul>` : ""}
<p class="muted">Only allow applications you trust. The name above is chosen by the application itself.</p>
<button type="button" id="allow">Allow</button><button type="button" id="deny">Deny</button>
<p id="error" role="alert"></p>`,
  );
}

export function invalidRequestPage(script: string): string {
  return page(
    "Invalid request",
    "invalid",
    script,
    `<h1>This authorization request is invalid or has expired</h1>
<p>Go back to the application and connect again.</p>`,
  );
}

/**
 * The pages' script: POSTs to Better Auth, then the browser follows the answer's `url`. An
 * account with two-factor codes gets `twoFactorRedirect` (and a challenge cookie) from the
 * sign-in: the code form appears, and the verified code opens the session and continues.
 */
export const PAGES_SCRIPT = `"use strict";
(() => {
  const oauthQuery = window.location.search.slice(1);
  const error = () => document.getElementById("error");
  async function post(path, body) {
    const res = await fetch("/api/auth" + path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ ...body, oauth_query: oauthQuery }),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.message || data.error_description || "request failed (" + res.status + ")");
    return data;
  }
  function follow(data) {
    if (typeof data.url !== "string") throw new Error("unexpected answer from the server");
    window.location.assign(data.url);
  }
  function run(button, action) {
    error().textContent = "";
    button.disabled = true;
    action().then(
      () => { button.disabled = false; },
      (err) => { error().textContent = err.message; button.disabled = false; },
    );
  }
  function onSubmit(form, action) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(form.querySelector("button"), () => action(new FormData(form)));
    });
  }
  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "sign-in") {
      const signIn = document.getElementById("sign-in");
      const twoFactor = document.getElementById("two-factor");
      onSubmit(signIn, async (data) => {
        const answer = await post("/sign-in/email", { email: data.get("email"), password: data.get("password") });
        if (answer.twoFactorRedirect) {
          signIn.hidden = true;
          twoFactor.hidden = false;
          document.getElementById("code").focus();
          return;
        }
        follow(answer);
      });
      onSubmit(twoFactor, async (data) => {
        const path = data.get("backup") ? "/two-factor/verify-backup-code" : "/two-factor/verify-totp";
        follow(await post(path, { code: String(data.get("code")).trim() }));
      });
    } else if (page === "consent") {
      for (const [id, accept] of [["allow", true], ["deny", false]]) {
        const button = document.getElementById(id);
        button.addEventListener("click", () => run(button, () => post("/oauth2/consent", { accept }).then(follow)));
      }
    }
  });
})();
`;
