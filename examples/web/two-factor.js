// Two-factor codes in the example app (Better Auth's twoFactor plugin on the auth-service):
// - set-up, signed in: the password -> /two-factor/enable answers an otpauth:// URI (shown as a
//   QR code, drawn by the vendored qrcode-generator, and as text) and ten backup codes; the first
//   code from the authenticator app confirms it (/two-factor/verify-totp); the password turns it
//   off again (/two-factor/disable);
// - the challenge: a password sign-in of such an account answers {twoFactorRedirect: true} and
//   no session; the code (or a backup code) finishes it through the challenge cookie.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, ApiError, authCall, guarded, notice } = app;
  const TOTP_CODE = /^\d{6}$/;

  function codeError(error) {
    if (error instanceof ApiError && error.code === "two_factor_throttled") return error; // says how long to wait
    if (error instanceof ApiError && error.status === 401 && error.code === "invalid_two_factor_cookie") {
      return new ApiError("This sign-in attempt has expired. Sign in again with your password.", { status: 401, code: error.code });
    }
    if (error instanceof ApiError && (error.status === 401 || error.code === "invalid_code")) {
      return new ApiError("That code is wrong, expired or already used. Type the current code from your authenticator app (or an unused backup code).", { status: error.status, code: error.code });
    }
    return error;
  }

  // ---- the sign-in challenge ------------------------------------------------------------------
  let finishSignIn = null; // app.js's enterApp, for the user the challenge belongs to

  /** Called by app.js when the password sign-in answered twoFactorRedirect. */
  function challenge(enterApp) {
    finishSignIn = enterApp;
    app.account.show("two-factor-view");
    $("two-factor-code").value = "";
    $("two-factor-code").focus();
  }

  const verifyChallenge = guarded(async () => {
    const code = $("two-factor-code").value.trim().replace(/\s+/g, "");
    if (!code) throw new ApiError("Type the code from your authenticator app, or a backup code.");
    const path = TOTP_CODE.test(code) ? "/api/auth/two-factor/verify-totp" : "/api/auth/two-factor/verify-backup-code";
    let data;
    try {
      data = await authCall(path, { method: "POST", body: { code } });
    } catch (error) {
      throw codeError(error);
    }
    $("two-factor-code").value = "";
    await finishSignIn(data.user);
  });

  // ---- set-up and turning off, signed in ------------------------------------------------------
  function render(enabled) {
    $("two-factor-status").textContent = enabled
      ? "Two-factor codes are on: signing in with your password also asks for a code."
      : "Two-factor codes are off.";
    $("two-factor-enable-form").hidden = enabled;
    $("two-factor-disable-form").hidden = !enabled;
    $("two-factor-setup").hidden = true;
  }

  function load(user) {
    render(!!(user && user.twoFactorEnabled));
  }

  function reset() {
    render(false);
    for (const id of ["two-factor-password", "two-factor-disable-password", "two-factor-confirm-code", "two-factor-code"]) $(id).value = "";
    $("backup-codes").replaceChildren();
    $("totp-qr").removeAttribute("src");
    $("totp-uri").textContent = "";
  }

  /** The otpauth:// URI as a QR code image (a GIF data URL made in the page: the secret leaves it never). */
  function qrImage(uri) {
    const qr = window.qrcode(0, "M");
    qr.addData(uri);
    qr.make();
    return qr.createDataURL(4, 4);
  }

  const enable = guarded(async () => {
    const password = $("two-factor-password").value;
    if (!password) throw new ApiError("Type your password to set up two-factor codes.");
    let data;
    try {
      data = await authCall("/api/auth/two-factor/enable", { method: "POST", body: { password } });
    } catch (error) {
      if (error instanceof ApiError && error.code === "invalid_password") throw new ApiError("Wrong password: two-factor codes were not set up.", { status: error.status, code: error.code });
      throw error;
    }
    $("two-factor-password").value = "";
    $("totp-qr").src = qrImage(data.totpURI);
    $("totp-uri").textContent = data.totpURI;
    $("backup-codes").replaceChildren(...data.backupCodes.map((code) => el("li", {}, el("code", {}, code))));
    $("two-factor-enable-form").hidden = true;
    $("two-factor-setup").hidden = false;
    $("two-factor-confirm-code").focus();
  });

  const confirmSetup = guarded(async () => {
    const code = $("two-factor-confirm-code").value.trim().replace(/\s+/g, "");
    if (!TOTP_CODE.test(code)) throw new ApiError("Type the 6-digit code your authenticator app shows.");
    try {
      await authCall("/api/auth/two-factor/verify-totp", { method: "POST", body: { code } });
    } catch (error) {
      throw codeError(error);
    }
    $("two-factor-confirm-code").value = "";
    render(true);
    notice("Two-factor codes are on. Keep the backup codes somewhere safe: each works once.");
  });

  const disable = guarded(async () => {
    const password = $("two-factor-disable-password").value;
    if (!password) throw new ApiError("Type your password to turn two-factor codes off.");
    try {
      await authCall("/api/auth/two-factor/disable", { method: "POST", body: { password } });
    } catch (error) {
      if (error instanceof ApiError && error.code === "invalid_password") throw new ApiError("Wrong password: two-factor codes stay on.", { status: error.status, code: error.code });
      throw error;
    }
    $("two-factor-disable-password").value = "";
    render(false);
    notice("Two-factor codes are off.");
  });

  $("two-factor-form").addEventListener("submit", verifyChallenge);
  $("two-factor-back").addEventListener("click", () => app.account.show("auth-view"));
  $("two-factor-enable-form").addEventListener("submit", enable);
  $("two-factor-confirm-form").addEventListener("submit", confirmSetup);
  $("two-factor-disable-form").addEventListener("submit", disable);

  app.twoFactor = { challenge, load, reset };
})();
