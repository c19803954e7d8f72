// The example browser app for auth-service (Better Auth) + rag-service. Plain JS, no build step:
// index.html loads core.js (session, tokens, calls), orgs.js (organization switcher),
// account.js (mailed links, verification, password reset, sessions), two-factor.js and
// passkeys.js (sign-in security), collections.js (collection
// picker), chat.js (answers, search, history) and this file, which
// signs users in and out, lists and uploads documents, and wires the page together.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, state, ApiError, AUTH_URL, RAG_URL, authCall, mintToken, ragJson, guarded, notice, showError, asList } = app;

  function signedIn(user) {
    state.user = user;
    $("auth-view").hidden = true;
    $("app-view").hidden = false;
    $("sign-out").hidden = false;
    $("user-email").textContent = user ? `Signed in as ${user.email}` : "";
  }

  function signedOut(reason) {
    clearTimeout(state.refreshTimer);
    Object.assign(state, { user: null, token: null, tokenExp: 0, refreshTimer: null, conversationId: null, orgs: [] });
    app.account.show("auth-view");
    $("app-view").hidden = true;
    delete $("app-view").dataset.loaded;
    $("sign-out").hidden = true;
    $("user-email").textContent = "";
    for (const id of ["documents", "sources", "history", "conversation", "answer", "search-results"]) $(id).replaceChildren();
    $("source-detail").hidden = true;
    $("delete-account-password").value = "";
    $("account-card").querySelector("details").open = false;
    app.orgs.reset();
    app.collections.reset();
    app.account.reset();
    app.reading.reset(); // the next user sees none of these file names
    app.twoFactor.reset();
    app.passkeys.reset();
    if (reason) notice(reason);
  }

  async function enterApp(user) {
    await mintToken();
    signedIn(user);
    // Organization names label the collections; the collection picker narrows the documents.
    const workspace = async () => {
      await app.orgs.load().catch(showError);
      await app.collections.load();
      await loadDocuments();
    };
    try {
      app.twoFactor.load(user);
      await Promise.all([workspace(), app.chat.loadHistory(), app.account.load(user).catch(showError), app.passkeys.load().catch(showError)]);
    } finally {
      $("app-view").dataset.loaded = "true"; // for tests (and styles): the first load is over
    }
  }

  // ---- sign up / sign in / sign out ------------------------------------------------------
  function credentials() {
    const email = $("email").value.trim();
    const password = $("password").value;
    if (!email || !password) throw new ApiError("Enter your email and password.");
    return { email, password };
  }

  const signIn = guarded(async () => {
    const data = await authCall("/api/auth/sign-in/email", { method: "POST", body: credentials() });
    $("password").value = "";
    // Two-factor codes are on: no session yet, the code screen finishes the sign-in (two-factor.js).
    if (data.twoFactorRedirect) return app.twoFactor.challenge(enterApp);
    await enterApp(data.user);
  });

  const signInWithPasskey = guarded(() => app.passkeys.signIn(enterApp));

  const signUp = guarded(async () => {
    const { email, password } = credentials();
    // The auth-service's minimum for new passwords (PASSWORD_MIN), kept in the input's minlength.
    // Only sign-up checks it: an older account may still sign in with a shorter password.
    const minimum = $("password").minLength;
    if (password.length < minimum) throw new ApiError(`Choose a password of at least ${minimum} characters.`);
    const name = $("name").value.trim() || email.split("@")[0];
    const data = await authCall("/api/auth/sign-up/email", { method: "POST", body: { email, password, name } });
    $("password").value = "";
    if (!data.token) {
      // The auth-service requires a confirmed address (EMAIL_VERIFICATION=required): no session yet.
      // It answers this way for a taken address too, so the app says nothing about which it was.
      notice(`Check your inbox: follow the link in the mail sent to ${email} to finish signing up.`);
      return;
    }
    await enterApp(data.user);
  });

  const signOut = guarded(async () => {
    try {
      await authCall("/api/auth/sign-out", { method: "POST", body: {} });
    } finally {
      signedOut("You are signed out.");
    }
  });

  /**
   * Better Auth's /delete-user, confirmed by the password. A sole owner of an organization with
   * other members is refused (409 SOLE_OWNER): they transfer or delete it first.
   */
  const deleteAccount = guarded(async () => {
    const password = $("delete-account-password").value;
    if (!password) throw new ApiError("Type your password to confirm the deletion.");
    try {
      await authCall("/api/auth/delete-user", { method: "POST", body: { password } });
    } catch (error) {
      if (error instanceof ApiError && error.code === "sole_owner") {
        throw new ApiError("You are the only owner of an organization that has other members. Make another member an owner (or delete the organization) first, then delete your account.", { status: error.status, code: error.code });
      }
      if (error instanceof ApiError && error.code === "invalid_password") throw new ApiError("Wrong password: the account was not deleted.", { status: error.status, code: error.code });
      throw error;
    }
    $("delete-account-password").value = "";
    signedOut("Your account was deleted.");
  });

  /** On page load: an existing session cookie signs the user straight in. */
  async function restoreSession() {
    // A mailed link (confirm, reset, invitation) is handled first; reset and forgot stay on their form.
    if (await app.account.handleLink()) return;
    let session = null;
    try {
      session = await authCall("/api/auth/get-session");
    } catch (error) {
      showError(error);
    }
    if (!session || !session.user) {
      signedOut();
      return;
    }
    try {
      await enterApp(session.user);
    } catch (error) {
      showError(error);
      if (!state.token) signedOut(); // could not mint a token: back to the sign-in form
    }
  }

  // ---- documents (of the collection picked for uploads) ------------------------------------
  const docId = (doc) => doc.id || doc.document_id;
  let pollTimer = null;

  async function loadDocuments() {
    const collectionId = app.collections.uploadTarget();
    const query = collectionId ? `&collection_id=${encodeURIComponent(collectionId)}` : "";
    const docs = asList(await ragJson(`/documents?limit=100${query}`), "documents", "items", "results");
    app.reading.noteFiles(docs);
    const list = $("documents");
    list.replaceChildren(
      ...docs.map((doc) =>
        el("li", { className: "doc", dataset: { id: docId(doc), status: doc.status || "" } },
          el("span", { className: "title" }, doc.title || doc.source_name || docId(doc)),
          app.reading.fileNameBeside(docId(doc), doc.title),
          el("span", { className: `badge ${doc.status || ""}` }, doc.status || ""),
          doc.status === "failed" && doc.error ? el("small", { className: "error-text" }, doc.error) : null,
          el("button", { type: "button", className: "link delete", title: "Delete", onclick: guarded(() => deleteDocument(doc)) }, "Delete"),
        ),
      ),
    );
    $("documents-empty").hidden = docs.length > 0;
    clearTimeout(pollTimer);
    if (docs.some((doc) => doc.status === "indexing")) {
      pollTimer = setTimeout(() => loadDocuments().catch(showError), 1000);
    }
  }

  async function deleteDocument(doc) {
    await ragJson(`/documents/${encodeURIComponent(docId(doc))}`, { method: "DELETE" });
    notice(`Deleted "${doc.title}".`);
    await loadDocuments();
  }

  /** One line per file: its name and what the rag-service said about it. */
  function showUploadResults(items, files) {
    const list = $("upload-results");
    list.replaceChildren(...items.map((item) => {
      const name = files[item.index] ? files[item.index].name : `file ${item.index + 1}`;
      const text = item.result === "error" ? item.error.message : item.message;
      return el("li", { className: `upload-${item.result}`, dataset: { result: item.result } }, `${name}: ${text}`);
    }));
    list.hidden = items.length === 0;
  }

  const upload = guarded(async () => {
    const files = [...$("file-input").files];
    if (files.length === 0) throw new ApiError("Choose a file to upload first.");
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    const collectionId = app.collections.uploadTarget();
    if (collectionId) form.append("collection_id", collectionId);
    const progress = $("upload-progress");
    $("upload").disabled = true;
    progress.value = 0;
    progress.hidden = false;
    showUploadResults([], files);
    try {
      let data;
      try {
        data = await app.ragUpload("/documents/upload", form, (sent, total) => { progress.value = sent / total; });
      } catch (error) {
        if (error.status === 413) $("file-input").value = ""; // that file can never be accepted
        if (error.code === "network_error") {
          // A server refusing an oversized body may close the connection before answering.
          throw new ApiError(`The upload failed before the rag-service answered. The file may be too large, or the service is down. (${error.message})`, { code: "network_error" });
        }
        throw app.collections.refusal(error, collectionId, "upload into");
      }
      // One result per file, in order: created, duplicate (already there) or error (why).
      const items = asList(data, "items");
      showUploadResults(items, files);
      const refused = items.filter((item) => item.result === "error");
      if (refused.length) {
        showError(`${refused.length} of ${items.length} file${items.length === 1 ? " was" : "s were"} not added (see the list below the upload button).`);
      }
      const added = items.filter((item) => item.result !== "error");
      notice(added.length ? added.map((d) => d.message).join(" ") : "Upload finished.");
      $("file-input").value = "";
    } finally {
      $("upload").disabled = false;
      progress.hidden = true;
    }
    await Promise.all([loadDocuments(), app.collections.load()]); // new document counts
  });

  // ---- wiring -------------------------------------------------------------------------------
  $("auth-url").textContent = AUTH_URL;
  $("rag-url").textContent = RAG_URL;
  $("auth-form").addEventListener("submit", signIn);
  $("sign-up").addEventListener("click", signUp);
  $("passkey-sign-in").addEventListener("click", signInWithPasskey);
  $("sign-out").addEventListener("click", signOut);
  $("delete-account-form").addEventListener("submit", deleteAccount);
  $("upload-form").addEventListener("submit", upload);
  document.addEventListener("ragapp:collection-picked", () => loadDocuments().catch(showError));
  window.addEventListener("offline", () => showError(new ApiError("You are offline: requests will fail until the network is back.")));
  app.signedOut = signedOut;
  // A mailed link opened in this tab while the app is already open only changes the fragment.
  window.addEventListener("hashchange", () => {
    if (location.hash.length > 1) restoreSession();
  });
  restoreSession();
})();
