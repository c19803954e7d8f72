// Passkeys in the example app (Better Auth's passkey plugin on the auth-service), with the
// browser's own WebAuthn JSON helpers (PublicKeyCredential.parseCreationOptionsFromJSON /
// parseRequestOptionsFromJSON and credential.toJSON()): no library.
// - signed in: add one or more passkeys (/passkey/generate-register-options -> create() ->
//   /passkey/verify-registration), list them, remove one (/passkey/delete-passkey);
// - signed out: "Sign in with a passkey" (/passkey/generate-authenticate-options -> get() ->
//   /passkey/verify-authentication), which opens an ordinary session.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, ApiError, authCall, guarded, notice, asList } = app;

  function supported() {
    return !!(window.PublicKeyCredential && PublicKeyCredential.parseCreationOptionsFromJSON && PublicKeyCredential.parseRequestOptionsFromJSON);
  }

  function requireSupport() {
    if (!window.isSecureContext) throw new ApiError("Passkeys need a secure page (https, or http://localhost).");
    if (!supported()) throw new ApiError("This browser cannot use passkeys here (it lacks WebAuthn's JSON helpers).");
  }

  /** The browser's answer when the person cancels or no passkey fits: a sentence, not a stack. */
  function ceremonyError(error, what) {
    if (error && (error.name === "NotAllowedError" || error.name === "AbortError")) {
      return new ApiError(`No passkey was ${what}: the request was cancelled or timed out.`);
    }
    if (error && error.name === "InvalidStateError") return new ApiError("This device already holds a passkey for your account.");
    return error;
  }

  async function load() {
    const passkeys = asList(await authCall("/api/auth/passkey/list-user-passkeys"), "passkeys");
    $("passkeys").replaceChildren(
      ...passkeys.map((passkey) =>
        el("li", { dataset: { id: passkey.id } },
          el("span", { className: "title" }, passkey.name || "Passkey"),
          el("small", { className: "muted" }, `added ${new Date(passkey.createdAt).toLocaleString()}`),
          el("button", { type: "button", className: "link delete", onclick: guarded(() => remove(passkey)) }, "Remove"),
        ),
      ),
    );
    $("passkeys-empty").hidden = passkeys.length > 0;
  }

  function reset() {
    $("passkeys").replaceChildren();
    $("passkey-name").value = "";
  }

  const register = guarded(async () => {
    requireSupport();
    const options = await authCall("/api/auth/passkey/generate-register-options");
    let credential;
    try {
      credential = await navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
    } catch (error) {
      throw ceremonyError(error, "added");
    }
    const name = $("passkey-name").value.trim() || undefined;
    await authCall("/api/auth/passkey/verify-registration", { method: "POST", body: { response: credential.toJSON(), name } });
    $("passkey-name").value = "";
    await load();
    notice("Passkey added: you can sign in with it alone.");
  });

  async function remove(passkey) {
    await authCall("/api/auth/passkey/delete-passkey", { method: "POST", body: { id: passkey.id } });
    await load();
    notice(`Removed the passkey "${passkey.name || "Passkey"}".`);
  }

  /** Signs in with a passkey alone; `enterApp` is app.js's, for the user it belongs to. */
  async function signIn(enterApp) {
    requireSupport();
    const options = await authCall("/api/auth/passkey/generate-authenticate-options");
    let credential;
    try {
      credential = await navigator.credentials.get({ publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) });
    } catch (error) {
      throw ceremonyError(error, "used");
    }
    let data;
    try {
      data = await authCall("/api/auth/passkey/verify-authentication", { method: "POST", body: { response: credential.toJSON() } });
    } catch (error) {
      if (error instanceof ApiError && error.code === "passkey_not_found") throw new ApiError("That passkey is not registered here (it may have been removed).", { status: error.status, code: error.code });
      throw error;
    }
    await enterApp(data.user);
  }

  $("passkey-add-form").addEventListener("submit", register);

  app.passkeys = { load, reset, signIn };
})();
