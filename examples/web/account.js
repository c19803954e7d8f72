// Accounts by mail in the example app (Better Auth routes on the auth-service, /api/auth/*):
// - the links the auth-service mails lead here with the token in the fragment:
//   #verify-email=<token>, #reset-password=<token>, #invitation=<id>, #forgot-password;
//   the fragment is read once and cleared from the address bar;
// - "confirm your email address" banner with a resend button;
// - forgot password (asks for a link) and reset password (sets the new one) forms;
// - an invitation card: the invitation the link named, accepted or declined once signed in
//   (its id waits in localStorage while the person signs up and confirms their address);
// - the account's sessions: when, which browser, revoke one, sign out everywhere else.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, state, ApiError, authCall, guarded, notice, showError } = app;
  const PENDING_INVITATION = "ragApp.pendingInvitation";

  /** The action in the address bar's fragment, if a mailed link brought the person here. */
  function takeLink() {
    const hash = location.hash.slice(1);
    if (!hash) return null;
    const [action, ...rest] = hash.split("=");
    const value = decodeURIComponent(rest.join("="));
    // Tokens leave the address bar (and the history) at once.
    history.replaceState(null, "", location.pathname + location.search);
    return { action, value };
  }

  function show(view) {
    for (const id of ["auth-view", "forgot-view", "reset-view", "two-factor-view"]) $(id).hidden = id !== view;
  }

  /**
   * Handles a mailed link before the session is restored. Returns true when the page should
   * stay on a form of its own (reset password, forgot password) instead of restoring the session.
   */
  async function handleLink() {
    const link = takeLink();
    if (!link) return false;
    switch (link.action) {
      case "verify-email":
        try {
          // Verifying also signs the person in (a session cookie), so the session restore that follows finds it.
          await authCall(`/api/auth/verify-email?token=${encodeURIComponent(link.value)}`);
          notice("Your email address is confirmed.");
        } catch (error) {
          showError(error.code === "token_expired"
            ? new ApiError("That confirmation link has expired. Sign in to get a new one.")
            : new ApiError("That confirmation link is not valid (it may have been replaced by a newer one). Sign in to get a new one."));
        }
        return false;
      case "reset-password":
        state.resetToken = link.value;
        show("reset-view");
        return true;
      case "forgot-password":
        show("forgot-view");
        return true;
      case "invitation":
        localStorage.setItem(PENDING_INVITATION, link.value);
        notice("Sign in (or create an account with the invited address) to answer the invitation.");
        return false;
      default:
        return false;
    }
  }

  // ---- forgot / reset password --------------------------------------------------------------
  const requestReset = guarded(async () => {
    const email = $("forgot-email").value.trim();
    if (!email) throw new ApiError("Enter the email address of your account.");
    await authCall("/api/auth/request-password-reset", { method: "POST", body: { email } });
    // The same answer whether an account exists or not (the auth-service says nothing more).
    notice("If an account uses that address, a mail with a link to choose a new password is on its way.");
    $("forgot-email").value = "";
    show("auth-view");
  });

  const resetPassword = guarded(async () => {
    const newPassword = $("new-password").value;
    const minimum = $("new-password").minLength;
    if (newPassword.length < minimum) throw new ApiError(`Choose a password of at least ${minimum} characters.`);
    try {
      await authCall("/api/auth/reset-password", { method: "POST", body: { token: state.resetToken, newPassword } });
    } catch (error) {
      if (error.code === "invalid_token") {
        throw new ApiError("That reset link is no longer valid: it was used already or has expired. Ask for a new one.");
      }
      throw error;
    }
    state.resetToken = null;
    $("new-password").value = "";
    app.signedOut("Your password is changed and every session of your account has ended. Sign in with the new password.");
  });

  // ---- signed in: the verification banner, a pending invitation, the sessions ----------------
  function showVerification(user) {
    $("verify-banner").hidden = !user || user.emailVerified !== false;
  }

  const resendVerification = guarded(async () => {
    await authCall("/api/auth/send-verification-email", { method: "POST", body: { email: state.user.email } });
    notice(`A new confirmation link is on its way to ${state.user.email}.`);
  });

  /** The invitation a mailed link named, shown once the person is signed in. */
  async function loadPendingInvitation() {
    const id = localStorage.getItem(PENDING_INVITATION);
    $("invitation-card").hidden = true;
    if (!id) return;
    let invitation;
    try {
      invitation = await authCall(`/api/auth/organization/get-invitation?id=${encodeURIComponent(id)}`);
    } catch (error) {
      localStorage.removeItem(PENDING_INVITATION);
      throw app.orgs.explained(error, "accept an invitation");
    }
    $("invitation-text").textContent = `${invitation.inviterEmail ? `${invitation.inviterEmail} invites` : "You are invited"} you to join ${invitation.organizationName} as ${invitation.role}.`;
    $("invitation-card").dataset.id = id;
    $("invitation-card").hidden = false;
  }

  const answerInvitation = (accept) => guarded(async () => {
    const id = $("invitation-card").dataset.id;
    try {
      if (accept) await app.orgs.accept(id);
      else await app.orgs.decline(id);
    } catch (error) {
      throw app.orgs.explained(error, "accept an invitation");
    } finally {
      localStorage.removeItem(PENDING_INVITATION);
      $("invitation-card").hidden = true;
    }
  });

  function describeAgent(ua) {
    if (!ua) return "an unknown device";
    const browser = /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Firefox\//.test(ua) ? "Firefox" : /Safari\//.test(ua) ? "Safari" : ua.slice(0, 60);
    const system = /Windows/.test(ua) ? "Windows" : /Mac OS/.test(ua) ? "macOS" : /Android/.test(ua) ? "Android" : /Linux/.test(ua) ? "Linux" : "";
    return system ? `${browser} on ${system}` : browser;
  }

  const when = (iso) => new Date(iso).toLocaleString();

  async function loadSessions() {
    const [sessions, current] = await Promise.all([authCall("/api/auth/list-sessions"), authCall("/api/auth/get-session")]);
    const currentId = current?.session?.id;
    const list = app.asList(sessions).sort((a, b) => Date.parse(b.updatedAt) - Date.parse(a.updatedAt));
    $("sessions").replaceChildren(...list.map((s) =>
      el("li", { dataset: { id: s.id, current: String(s.id === currentId) } },
        el("span", {}, describeAgent(s.userAgent)),
        el("small", { className: "muted" }, `signed in ${when(s.createdAt)}, last active ${when(s.updatedAt)}`),
        s.id === currentId
          ? el("span", { className: "badge ready" }, "this browser")
          : el("button", { type: "button", className: "link delete", onclick: guarded(() => revokeSession(s)) }, "Sign out"),
      )));
    $("revoke-others").disabled = list.length < 2;
  }

  async function revokeSession(session) {
    await authCall("/api/auth/revoke-session", { method: "POST", body: { token: session.token } });
    notice(`Signed out ${describeAgent(session.userAgent)}.`);
    await loadSessions();
  }

  const revokeOthers = guarded(async () => {
    await authCall("/api/auth/revoke-other-sessions", { method: "POST", body: {} });
    notice("Every other session of your account has ended.");
    await loadSessions();
  });

  /** Called by app.js once signed in. */
  async function load(user) {
    showVerification(user);
    await Promise.all([loadSessions(), loadPendingInvitation().catch(showError)]);
  }

  function reset() {
    $("verify-banner").hidden = true;
    $("invitation-card").hidden = true;
    $("sessions").replaceChildren();
  }

  $("forgot-link").addEventListener("click", (event) => {
    event.preventDefault();
    $("forgot-email").value = $("email").value.trim();
    show("forgot-view");
  });
  for (const id of ["forgot-back", "reset-back"]) {
    $(id).addEventListener("click", (event) => {
      event.preventDefault();
      show("auth-view");
    });
  }
  $("forgot-form").addEventListener("submit", requestReset);
  $("reset-form").addEventListener("submit", resetPassword);
  $("resend-verification").addEventListener("click", resendVerification);
  $("invitation-accept").addEventListener("click", answerInvitation(true));
  $("invitation-decline").addEventListener("click", answerInvitation(false));
  $("revoke-others").addEventListener("click", revokeOthers);

  app.account = { handleLink, load, reset, show };
})();
