// The collection picker: the rag-service's collections the caller can read (GET /collections:
// personal ones, then those of the organizations in the access token), each with the caller's
// role and whether they may write. One picker chooses where uploads go (and which documents
// are listed); another narrows search and chat to one collection or leaves them on all.
// A rag-service without collections (404 on GET /collections) hides both: the app then works
// as before, on the personal documents.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, state, ApiError, guarded, notice, ragJson } = app;
  const PERSONAL = "personal"; // the default personal collection's fixed id

  state.collections = null; // [Collection] once loaded; null: the rag-service has none

  const byId = (id) => (state.collections || []).find((c) => c.id === id);
  const ownerName = (c) => (c.organization_id ? app.orgs.orgName(c.organization_id) : "personal");
  /** "Lab notes (Tidewater Lab, read only)"; a personal one is just its name. */
  function label(c) {
    const notes = [c.organization_id ? ownerName(c) : null, c.can_write ? null : "read only"].filter(Boolean);
    return notes.length ? `${c.name} (${notes.join(", ")})` : c.name;
  }

  async function load() {
    let data;
    try {
      data = await ragJson("/collections");
    } catch (error) {
      if (error.status !== 404) throw error;
      state.collections = null; // an older rag-service: no collections at all
      render();
      return;
    }
    state.collections = app.asList(data, "collections");
    render();
  }

  function render() {
    const supported = state.collections !== null;
    for (const id of ["collections-card", "upload-collection-label", "search-collection-label"]) $(id).hidden = !supported;
    if (!supported) return;
    const collections = state.collections;
    $("collections").replaceChildren(...collections.map((c) =>
      el("li", { dataset: { id: c.id, role: c.role, canWrite: String(c.can_write) } },
        el("span", { className: "title" }, c.name),
        el("span", { className: "badge" }, ownerName(c)),
        el("span", { className: `badge ${c.can_write ? "ready" : ""}` }, `${c.role}${c.can_write ? "" : " · read only"}`),
        el("span", { className: "muted" }, `${c.document_count} document${c.document_count === 1 ? "" : "s"}`),
      )));
    app.fillSelect($("upload-collection"), collections.map((c) => ({ value: c.id, label: label(c) })),
      $("upload-collection").value || PERSONAL);
    app.fillSelect($("search-collection"),
      [{ value: "", label: "All collections" }, ...collections.map((c) => ({ value: c.id, label: label(c) }))]);
    const active = state.activeOrganizationId;
    app.fillSelect($("collection-owner"), [
      { value: "", label: "Just me (personal)" },
      ...(active ? [{ value: active, label: app.orgs.orgName(active) }] : []),
    ], active || "");
    if (!byId($("upload-collection").value)) $("upload-collection").value = PERSONAL;
  }

  /** Where an upload goes: the picked collection's id, or null when there are no collections. */
  const uploadTarget = () => (state.collections ? $("upload-collection").value || PERSONAL : null);
  /** The `filters` for search and chat: one collection, or null for every readable one. */
  function searchFilters() {
    const id = state.collections ? $("search-collection").value : "";
    return id ? { collection_id: id } : null;
  }

  /** A 403 `insufficient_role` from the rag-service, said with the collection and the role. */
  function refusal(error, collectionId, doing) {
    if (!(error instanceof ApiError) || error.code !== "insufficient_role") return error;
    const c = byId(collectionId);
    const where = c ? `"${c.name}" (${ownerName(c)})` : "that collection";
    const role = c?.role ? `you are a ${c.role} there, and members` : "members";
    return new ApiError(`You cannot ${doing} ${where}: ${role} may read its documents, but only owners and admins may add or change them.`,
      { status: error.status, code: error.code });
  }

  const create = guarded(async () => {
    const name = $("collection-name").value.trim();
    if (!name) throw new ApiError("Type a name for the new collection first.");
    const organizationId = $("collection-owner").value || null;
    const body = organizationId ? { name, organization_id: organizationId } : { name };
    let created;
    try {
      created = await ragJson("/collections", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
    } catch (error) {
      const where = organizationId ? app.orgs.orgName(organizationId) : "your personal space";
      if (error.code === "insufficient_role") {
        throw new ApiError(`Only owners and admins of ${where} can create collections in it.`, { status: 403, code: error.code });
      }
      if (error.code === "collection_exists") {
        throw new ApiError(`${where[0].toUpperCase()}${where.slice(1)} already has a collection named "${name}".`, { status: 409, code: error.code });
      }
      if (error.status === 404 && organizationId) {
        throw new ApiError(`Your access token does not list ${where}; switch to it again or sign in again.`, { status: 404, code: error.code });
      }
      throw error;
    }
    $("collection-name").value = "";
    await load();
    $("upload-collection").value = created.id;
    changed();
    notice(`Created the collection "${created.name}".`);
  });

  const changed = () => document.dispatchEvent(new CustomEvent("ragapp:collection-picked"));

  function reset() {
    state.collections = null;
    for (const id of ["collections", "upload-collection", "search-collection", "collection-owner"]) $(id).replaceChildren();
  }

  $("collection-form").addEventListener("submit", create);
  $("upload-collection").addEventListener("change", changed);
  document.addEventListener("ragapp:orgs-changed", () => load().then(changed).catch(app.showError));

  app.collections = { load, reset, uploadTarget, searchFilters, refusal, label: (id) => (byId(id) ? label(byId(id)) : id) };
})();
