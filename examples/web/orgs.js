// The organization switcher: the signed-in user's organizations (Better Auth's organization
// plugin on the auth-service, /api/auth/organization/*), creating one, inviting a member by
// e-mail (the auth-service mails a link), accepting invitations, and deleting an organization (owners). Any change of membership or of the active organization
// re-mints the access JWT, so its `orgs` claim (what the rag-service reads) is current, and
// then tells the other scripts with a "ragapp:orgs-changed" event.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, state, ApiError, authCall, guarded, notice } = app;
  const org = (route) => `/api/auth/organization/${route}`;

  state.organizations = []; // [{id, name, slug}] from /organization/list
  state.activeOrganizationId = null;

  /** The caller's role in organization `id`, as the current access JWT says. */
  const roleIn = (id) => state.orgs.find((o) => o.id === id)?.role || null;
  const orgName = (id) => state.organizations.find((o) => o.id === id)?.name || "an organization";

  /** Better Auth's organization codes, said for this app's user. */
  function explained(error, action) {
    if (!(error instanceof ApiError)) return error;
    const say = (message) => new ApiError(message, { status: error.status, code: error.code });
    switch (error.code) {
      case "invitation_not_found":
        return say("There is no pending invitation with that id: it may have been accepted, declined or canceled already, or it has expired.");
      case "invitation_expired":
        return say("That invitation has expired. Ask the organization to invite you again.");
      case "invitation_canceled":
        return say("That invitation was withdrawn by the organization.");
      case "invitation_rejected":
        return say("You declined that invitation already. Ask the organization to invite you again.");
      case "invitation_already_accepted":
        return say("You accepted that invitation already: the organization is in your list.");
      case "email_verification_required_before_accepting_or_rejecting_invitation":
      case "email_verification_required_for_invitation":
        return say("Confirm your email address first (use the link we mailed you), then answer the invitation.");
      case "you_are_not_the_recipient_of_the_invitation":
        return say("That invitation is addressed to another e-mail address. Sign in with the invited address to accept it.");
      case "you_are_not_allowed_to_invite_users_to_this_organization":
      case "you_are_not_allowed_to_invite_user_with_this_role":
        return say(`Only owners and admins of ${orgName(state.activeOrganizationId)} can invite members${error.code.endsWith("role") ? " (and only owners can invite owners)" : ""}.`);
      case "user_is_already_invited_to_this_organization":
        return say("That address already has a pending invitation to this organization.");
      case "user_is_already_a_member_of_this_organization":
        return say("That address already belongs to a member of this organization.");
      case "organization_already_exists":
      case "organization_slug_already_taken":
        return say("An organization with that name already exists. Choose another name.");
      case "organization_limit_reached":
        return say(`You cannot ${action}: you already belong to the most organizations one account may join.`);
      default:
        return error;
    }
  }
  const orgAction = (action, fn) => guarded(async (event) => {
    try {
      await fn(event);
    } catch (error) {
      throw explained(error, action);
    }
  });

  /** Reads the organizations and the session's active one, then shows them. */
  async function load({ restore = true } = {}) {
    const [organizations, session] = await Promise.all([authCall(org("list")), authCall("/api/auth/get-session")]);
    state.organizations = app.asList(organizations);
    state.activeOrganizationId = session?.session?.activeOrganizationId || null;
    if (restore && await restoreRememberedOrganization()) return load({ restore: false });
    rememberOrganization(state.activeOrganizationId);
    render();
    await loadInvitations();
  }

  // ---- the active organization, remembered across sign-ins ----------------------------------
  // Better Auth keeps the active organization per session: a new sign-in starts with none.
  // The last one this browser's user worked in (or "" for personal) is kept in localStorage
  // and made active again when a new session has none.
  const rememberedKey = () => (state.user?.id ? `ragApp.activeOrganization.${state.user.id}` : null);

  function rememberOrganization(organizationId) {
    const key = rememberedKey();
    if (key) localStorage.setItem(key, organizationId || "");
  }

  /** True when it made the remembered organization active again (the caller re-reads). */
  async function restoreRememberedOrganization() {
    const key = rememberedKey();
    const remembered = key ? localStorage.getItem(key) : null;
    if (state.activeOrganizationId || !remembered) return false;
    if (!state.organizations.some((o) => o.id === remembered)) {
      localStorage.removeItem(key); // left, removed or deleted since
      return false;
    }
    await authCall(org("set-active"), { method: "POST", body: { organizationId: remembered } });
    await app.remintToken(); // the token lists the active organization first
    return true;
  }

  function render() {
    const options = [{ value: "", label: "Personal (no organization)" }];
    for (const o of state.organizations) {
      const role = roleIn(o.id);
      options.push({ value: o.id, label: role ? `${o.name} (${role})` : o.name });
    }
    app.fillSelect($("org-select"), options, state.activeOrganizationId || "");
    const active = state.activeOrganizationId;
    $("org-role").textContent = active
      ? `Active: ${orgName(active)}, where you are ${roleIn(active) || "a member"}.`
      : "No active organization: new collections are personal unless you pick an organization.";
    $("invite-form").hidden = !active;
    $("org-delete").hidden = !active || roleIn(active) !== "owner";
    $("org-select").dataset.active = active || "";
  }

  /** Membership or the active organization changed: new token, then everyone re-reads. */
  async function changed() {
    await app.remintToken();
    await load();
    document.dispatchEvent(new CustomEvent("ragapp:orgs-changed"));
  }

  const switchOrganization = orgAction("switch", async () => {
    const organizationId = $("org-select").value || null;
    $("org-select").disabled = true;
    try {
      await authCall(org("set-active"), { method: "POST", body: { organizationId } });
      rememberOrganization(organizationId); // "" for personal: not restored at the next sign-in
      await changed();
    } catch (error) {
      render(); // back to what the session says
      throw error;
    } finally {
      $("org-select").disabled = false;
    }
    notice(organizationId ? `Switched to ${orgName(organizationId)}.` : "Switched to your personal space.");
  });

  /** A URL-safe slug from the name, made unique with a random suffix (Better Auth needs one). */
  function slugFor(name) {
    const base = name.toLowerCase().normalize("NFKD").replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40);
    return `${base || "org"}-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`;
  }

  const createOrganization = orgAction("create another organization", async () => {
    const name = $("org-name").value.trim();
    if (!name) throw new ApiError("Type a name for the new organization first.");
    const created = await authCall(org("create"), { method: "POST", body: { name, slug: slugFor(name) } });
    $("org-name").value = "";
    await changed(); // the new organization is the active one now
    notice(`Created ${created.name}; you are its owner and it is now active.`);
  });

  const invite = orgAction("invite", async () => {
    const email = $("invite-email").value.trim();
    const organizationId = state.activeOrganizationId;
    if (!organizationId) throw new ApiError("Pick an organization to invite someone to first.");
    if (!email || !email.includes("@")) throw new ApiError("Type the e-mail address to invite.");
    const invitation = await authCall(org("invite-member"), {
      method: "POST", body: { organizationId, email, role: $("invite-role").value },
    });
    $("invite-email").value = "";
    // The auth-service mails the invitee a link; the id is shown too, for pasting by hand.
    $("invitation-created").replaceChildren(
      "Invitation mailed. The invitee follows its link, or pastes this id under “Accept an invitation”: ",
      el("code", { id: "created-invitation-id", "data-testid": "invitation-id" }, invitation.id),
    );
    $("invitation-created").hidden = false;
  });

  /** Pending invitations for my address. Better Auth lists them only for verified addresses. */
  async function loadInvitations() {
    let invitations = [];
    $("invitations-hint").hidden = true;
    try {
      invitations = app.asList(await authCall(org("list-user-invitations")));
    } catch (error) {
      if (error.code !== "email_verification_required_for_invitation") throw error;
      $("invitations-hint").hidden = false;
    }
    $("my-invitations").replaceChildren(...invitations.map((inv) =>
      el("li", { dataset: { id: inv.id } },
        el("span", {}, `${inv.organizationName || "An organization"} invites you as ${inv.role}`),
        el("button", { type: "button", className: "link", onclick: orgAction("accept an invitation", () => accept(inv.id)) }, "Accept"),
        el("button", { type: "button", className: "link delete", onclick: orgAction("decline", () => decline(inv.id)) }, "Decline"),
      )));
  }

  async function accept(invitationId) {
    const { member } = await authCall(org("accept-invitation"), { method: "POST", body: { invitationId } });
    await changed(); // accepting makes that organization the active one
    notice(`You joined ${orgName(member.organizationId)} as ${member.role}.`);
  }

  async function decline(invitationId) {
    await authCall(org("reject-invitation"), { method: "POST", body: { invitationId } });
    await loadInvitations();
    notice("Invitation declined.");
  }

  const acceptById = orgAction("accept an invitation", async () => {
    const invitationId = $("accept-invitation-id").value.trim();
    if (!invitationId) throw new ApiError("Paste the invitation id you were sent first.");
    await accept(invitationId);
    $("accept-invitation-id").value = "";
  });

  /** Owners only: Better Auth removes every member; the rag-service then erases its collections. */
  const deleteOrganization = orgAction("delete the organization", async () => {
    const organizationId = state.activeOrganizationId;
    if (!organizationId) return;
    const name = orgName(organizationId);
    if (!window.confirm(`Delete ${name}? Every member loses access, and its collections, documents and answers are erased. This cannot be undone.`)) return;
    await authCall(org("delete"), { method: "POST", body: { organizationId } });
    await authCall(org("set-active"), { method: "POST", body: { organizationId: null } });
    rememberOrganization(null);
    await changed();
    notice(`Deleted ${name}.`);
  });

  function reset() {
    state.organizations = [];
    state.activeOrganizationId = null;
    $("org-select").replaceChildren();
    $("my-invitations").replaceChildren();
    $("invitation-created").hidden = true;
    $("invitations-hint").hidden = true;
    $("org-role").textContent = "";
    $("org-delete").hidden = true;
  }

  $("org-select").addEventListener("change", switchOrganization);
  $("org-create-form").addEventListener("submit", createOrganization);
  $("invite-form").addEventListener("submit", invite);
  $("accept-form").addEventListener("submit", acceptById);
  $("org-delete").addEventListener("click", deleteOrganization);

  app.orgs = { load, reset, roleIn, orgName, accept, decline, explained };
})();
