// Single sign-on in the example app: a "Sign in with …" button for each provider the
// auth-service lists (GET /api/auth/sso/providers; none configured -> no buttons). A click asks
// the auth-service for the provider's address (POST /api/auth/sign-in/social: it keeps the
// state and PKCE verifier) and goes there; the provider sends the browser back through the
// auth-service, which sets the session cookie and returns to this page, where the usual session
// restore signs the person in. A refusal comes back as ?error=<code>, said once and removed.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, ApiError, authCall, guarded, showError } = app;

  /** Better Auth's callback error codes, as sentences. */
  const REFUSALS = {
    account_not_linked: "An account with this email address already exists. To use single sign-on with it, the provider must confirm the address and the account's address must be confirmed too: sign in with your password (and confirm your address) first.",
    email_not_verified: "The identity provider has not confirmed your email address: follow the link in the mail we sent you, then sign in again.",
    signup_disabled: "This identity provider signs in existing accounts only: ask an administrator for an invitation.",
    access_denied: "Single sign-on was cancelled at the identity provider.",
    state_mismatch: "That sign-in did not start in this browser (or took too long): please start again.",
    issuer_mismatch: "The identity provider's answer did not come from the expected issuer: sign-in refused.",
    invalid_code: "The identity provider's sign-in code was refused (already used or expired): please start again.",
  };

  /** Where the provider sends the browser back to: this page, without a fragment. */
  function returnUrl() {
    return `${location.origin}${location.pathname}${location.search}`;
  }

  const start = (provider) => guarded(async () => {
    const { url } = await authCall("/api/auth/sign-in/social", {
      method: "POST",
      body: { provider: provider.id, callbackURL: returnUrl(), errorCallbackURL: returnUrl(), disableRedirect: true },
    });
    location.assign(url);
  });

  async function loadProviders() {
    let providers = [];
    try {
      providers = (await authCall("/api/auth/sso/providers")).providers || [];
    } catch (error) {
      // An auth-service without single sign-on (older version): password sign-in only.
      if (error.status !== 404) showError(error);
    }
    $("sso-buttons").replaceChildren(...providers.map((provider) =>
      el("button", { type: "button", className: "secondary", dataset: { provider: provider.id }, onclick: start(provider) }, `Sign in with ${provider.name}`)));
    $("sso").hidden = providers.length === 0;
  }

  /** The auth-service's answer to a refused single sign-on, then the address bar without it. */
  function takeRefusal() {
    const params = new URLSearchParams(location.search);
    const code = params.get("error");
    if (!code) return;
    params.delete("error");
    params.delete("error_description");
    const query = params.toString();
    history.replaceState(null, "", `${location.pathname}${query ? `?${query}` : ""}${location.hash}`);
    showError(new ApiError(REFUSALS[code] || `Single sign-on failed (${code}).`, { code }));
  }

  app.sso = { loadProviders };
  takeRefusal();
  loadProviders();
})();
