// Example browser client for auth-service (Better Auth) + rag-service. Plain JS, no build step.
//
// Flow: sign up / sign in on the auth-service with a session cookie (credentials: "include")
// -> mint a short-lived access JWT from GET /api/auth/token -> call the rag-service with
// `Authorization: Bearer <JWT>`. The JWT is refreshed ~60 s before it expires, and any 401
// from the rag-service triggers one re-mint and one retry.
"use strict";

(() => {
  // ---- configuration: ?auth=...&rag=... > config.js > defaults --------------------------
  const params = new URLSearchParams(location.search);
  const fileConfig = window.APP_CONFIG || {};
  const trimSlash = (url) => String(url).replace(/\/+$/, "");
  const AUTH_URL = trimSlash(params.get("auth") || fileConfig.authUrl || "http://localhost:3001");
  const RAG_URL = trimSlash(params.get("rag") || fileConfig.ragUrl || "http://localhost:8000");
  const REFRESH_MARGIN_S = 60; // re-mint this long before `exp`
  const MIN_REFRESH_DELAY_S = 5;

  const $ = (id) => document.getElementById(id);
  const state = {
    user: null,
    token: null, // access JWT for the rag-service
    tokenExp: 0, // its `exp` (seconds since epoch)
    refreshTimer: null,
    minting: null, // in-flight mint, shared by concurrent callers
    conversationId: null,
    tokenMints: 0,
  };
  // Inspection hook for the browser test (and the curious); not needed by the app itself.
  window.ragApp = { state, AUTH_URL, RAG_URL };

  // ---- errors: every failure becomes a sentence for the user ----------------------------
  class ApiError extends Error {
    constructor(message, { status = 0, code = "error", retryAfter = null } = {}) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  function retryAfterSeconds(res) {
    const raw = res.headers.get("Retry-After");
    if (!raw) return null;
    if (/^\d+$/.test(raw.trim())) return Number(raw);
    const when = Date.parse(raw);
    return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  /** Builds an ApiError from a non-2xx response (rag: {error:{code,message}}, Better Auth: {code,message}). */
  async function errorFromResponse(res, service) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      /* not JSON */
    }
    const err = (body && (body.error || body)) || {};
    const code = String(err.code || "").toLowerCase() || `http_${res.status}`;
    const serverMessage = typeof err.message === "string" ? err.message : "";
    const retryAfter = retryAfterSeconds(res);
    let message;
    if (res.status === 429) {
      const wait = retryAfter != null ? `${retryAfter} second${retryAfter === 1 ? "" : "s"}` : "a minute";
      message = `Too many requests to the ${service}. Please wait ${wait} and try again.`;
    } else if (res.status === 413) {
      message = `That file is too large for the ${service}${serverMessage ? ` (${serverMessage})` : ""}.`;
    } else if (res.status === 401 && (code === "invalid_email_or_password" || code === "invalid_credentials")) {
      message = "Wrong email or password.";
    } else if (res.status >= 500) {
      message = `The ${service} had a problem (${res.status}${serverMessage ? `: ${serverMessage}` : ""}). Please try again.`;
    } else {
      message = serverMessage || `The ${service} answered ${res.status} ${res.statusText}.`;
    }
    return new ApiError(message, { status: res.status, code, retryAfter });
  }

  /** fetch() that turns "could not connect" into a readable ApiError. */
  async function request(url, init, service) {
    try {
      return await fetch(url, init);
    } catch (cause) {
      if (cause && cause.name === "AbortError") throw cause;
      throw new ApiError(`Cannot reach the ${service} at ${new URL(url).origin}. Is it running, and is this page's origin (${location.origin}) allowed by it? (${cause && cause.message ? cause.message : "network error"})`, { code: "network_error" });
    }
  }

  function showError(error) {
    const box = $("message");
    box.textContent = error instanceof Error ? error.message : String(error);
    box.hidden = false;
    if (!(error instanceof ApiError)) console.error(error);
  }
  function clearError() {
    $("message").hidden = true;
    $("message").textContent = "";
  }
  let noticeTimer = null;
  function notice(text) {
    const box = $("notice");
    box.textContent = text;
    box.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => (box.hidden = true), 6000);
  }
  /** Runs an async UI action; failures are shown, never swallowed. */
  function guarded(action) {
    return async (event) => {
      if (event) event.preventDefault();
      clearError();
      try {
        await action(event);
      } catch (error) {
        showError(error);
      }
    };
  }

  // ---- auth-service: session cookie + access JWT ----------------------------------------
  async function authCall(path, { method = "GET", body } = {}) {
    const init = { method, credentials: "include", headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await request(`${AUTH_URL}${path}`, init, "auth-service");
    if (!res.ok) throw await errorFromResponse(res, "auth-service");
    const text = await res.text();
    return text ? JSON.parse(text) : null;
  }

  function decodeJwtPayload(jwt) {
    const part = jwt.split(".")[1] || "";
    const base64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  /** GET /api/auth/token (session cookie) -> a fresh access JWT; schedules the next refresh. */
  function mintToken() {
    if (!state.minting) {
      state.minting = (async () => {
        try {
          const { token } = await authCall("/api/auth/token");
          const { exp } = decodeJwtPayload(token);
          state.token = token;
          state.tokenExp = exp;
          state.tokenMints += 1;
          scheduleRefresh();
          return token;
        } catch (error) {
          if (error.status === 401) {
            signedOut("Your session has ended. Please sign in again.");
          }
          throw error;
        } finally {
          state.minting = null;
        }
      })();
    }
    return state.minting;
  }

  function scheduleRefresh() {
    clearTimeout(state.refreshTimer);
    const delayS = Math.max(MIN_REFRESH_DELAY_S, state.tokenExp - Date.now() / 1000 - REFRESH_MARGIN_S);
    state.refreshTimer = setTimeout(() => {
      mintToken().catch(showError);
    }, delayS * 1000);
  }

  async function accessToken() {
    if (state.token && state.tokenExp - Date.now() / 1000 > 10) return state.token;
    return mintToken();
  }

  // ---- rag-service calls (bearer JWT, one retry after re-minting on 401) ----------------
  async function ragFetch(path, init = {}) {
    for (let attempt = 0; ; attempt++) {
      const token = attempt === 0 ? await accessToken() : await mintToken();
      const headers = { ...(init.headers || {}), Authorization: `Bearer ${token}` };
      const res = await request(`${RAG_URL}${path}`, { ...init, headers }, "rag-service");
      if (res.status === 401 && attempt === 0) continue;
      if (!res.ok) throw await errorFromResponse(res, "rag-service");
      return res;
    }
  }
  async function ragJson(path, init = {}) {
    const res = await ragFetch(path, init);
    return res.status === 204 ? null : res.json();
  }

  // ---- views ------------------------------------------------------------------------------
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child != null) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function signedIn(user) {
    state.user = user;
    $("auth-view").hidden = true;
    $("app-view").hidden = false;
    $("sign-out").hidden = false;
    $("user-email").textContent = user ? `Signed in as ${user.email}` : "";
  }

  function signedOut(reason) {
    clearTimeout(state.refreshTimer);
    Object.assign(state, { user: null, token: null, tokenExp: 0, refreshTimer: null, conversationId: null });
    $("auth-view").hidden = false;
    $("app-view").hidden = true;
    $("sign-out").hidden = true;
    $("user-email").textContent = "";
    for (const id of ["documents", "sources", "history", "conversation", "answer"]) $(id).replaceChildren();
    $("source-detail").hidden = true;
    if (reason) notice(reason);
  }

  async function enterApp(user) {
    await mintToken();
    signedIn(user);
    await Promise.all([loadDocuments(), loadHistory()]);
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
    await enterApp(data.user);
  });

  const signUp = guarded(async () => {
    const { email, password } = credentials();
    // The auth-service's minimum for new passwords (PASSWORD_MIN), kept in the input's minlength.
    // Only sign-up checks it: an older account may still sign in with a shorter password.
    const minimum = $("password").minLength;
    if (password.length < minimum) throw new ApiError(`Choose a password of at least ${minimum} characters.`);
    const name = $("name").value.trim() || email.split("@")[0];
    const data = await authCall("/api/auth/sign-up/email", { method: "POST", body: { email, password, name } });
    $("password").value = "";
    await enterApp(data.user);
  });

  const signOut = guarded(async () => {
    try {
      await authCall("/api/auth/sign-out", { method: "POST", body: {} });
    } finally {
      signedOut("You are signed out.");
    }
  });

  /** On page load: an existing session cookie signs the user straight in. */
  async function restoreSession() {
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

  // ---- documents ------------------------------------------------------------------------
  const asList = (data, ...keys) => {
    if (Array.isArray(data)) return data;
    for (const key of keys) if (data && Array.isArray(data[key])) return data[key];
    return [];
  };
  const docId = (doc) => doc.id || doc.document_id;
  let pollTimer = null;

  async function loadDocuments() {
    const docs = asList(await ragJson("/documents?limit=100"), "documents", "items", "results");
    const list = $("documents");
    list.replaceChildren(
      ...docs.map((doc) =>
        el("li", { className: "doc", dataset: { id: docId(doc), status: doc.status || "" } },
          el("span", { className: "title" }, doc.title || doc.source_name || docId(doc)),
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

  const upload = guarded(async () => {
    const files = [...$("file-input").files];
    if (files.length === 0) throw new ApiError("Choose a file to upload first.");
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    $("upload").disabled = true;
    try {
      let data;
      try {
        data = await ragJson("/documents/upload", { method: "POST", body: form });
      } catch (error) {
        if (error.status === 413) $("file-input").value = ""; // that file can never be accepted
        if (error.code === "network_error") {
          // A server refusing an oversized body may close the connection before answering.
          throw new ApiError(`The upload failed before the rag-service answered. The file may be too large, or the service is down. (${error.message})`, { code: "network_error" });
        }
        throw error;
      }
      const items = asList(data, "documents", "results", "items");
      const failures = [
        ...asList(data, "errors", "failed"),
        ...items.filter((item) => item.error && item.status !== "ready"),
      ];
      if (failures.length) {
        showError(`Some files were not added: ${failures.map((f) => `${f.filename || f.title || f.source_name || "file"}: ${f.message || f.error?.message || f.error}`).join("; ")}`);
      }
      const added = items.filter((item) => !item.error || item.status === "ready");
      // The rag-service says per file whether it was added or already there (deduplicated).
      notice(added.length ? added.map((d) => d.message || `Uploaded "${d.title}".`).join(" ") : "Upload finished.");
      $("file-input").value = "";
    } finally {
      $("upload").disabled = false;
    }
    await loadDocuments();
  });

  // ---- answers with citations ---------------------------------------------------------------
  /** Renders `text` into `container`; each [n] (or [n, m]) becomes a button showing source n. */
  function renderCited(container, text, sources, listEl, detailEl) {
    const pattern = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
    const nodes = [];
    let last = 0;
    for (const match of text.matchAll(pattern)) {
      nodes.push(text.slice(last, match.index));
      for (const n of match[1].split(",").map((s) => Number(s.trim()))) {
        nodes.push(el("button", {
          type: "button", className: "cite", dataset: { n: String(n) },
          title: sourceByNumber(sources, n)?.title || `source ${n}`,
          onclick: () => showSource(n, sources, listEl, detailEl),
        }, `[${n}]`));
      }
      last = match.index + match[0].length;
    }
    nodes.push(text.slice(last));
    container.replaceChildren(...nodes);
  }

  const sourceNumber = (source, index) => Number(source.number ?? source.n ?? index + 1);
  const sourceByNumber = (sources, n) => sources.find((s, i) => sourceNumber(s, i) === n);

  function renderSources(listEl, sources, detailEl) {
    listEl.replaceChildren(
      ...sources.map((s, i) => {
        const n = sourceNumber(s, i);
        return el("li", { value: String(n), dataset: { n: String(n) }, className: "source", onclick: () => showSource(n, sources, listEl, detailEl) },
          el("strong", {}, s.title || s.document_id),
          el("span", { className: "muted" }, ` · chunk ${s.chunk_index ?? "?"}${typeof s.score === "number" ? ` · score ${s.score.toFixed(3)}` : ""}`),
        );
      }),
    );
  }

  function showSource(n, sources, listEl, detailEl) {
    const source = sourceByNumber(sources, n);
    for (const li of listEl.children) li.classList.toggle("active", li.dataset.n === String(n));
    detailEl.hidden = false;
    if (!source) {
      detailEl.replaceChildren(el("p", {}, `Source [${n}] is not among the returned sources.`));
      return;
    }
    detailEl.replaceChildren(
      el("h4", {}, `[${n}] ${source.title || source.document_id}`),
      el("p", { className: "muted" }, `document ${source.document_id}, chunk ${source.chunk_index}`),
      el("blockquote", { className: "snippet" }, source.snippet || source.text || ""),
    );
    detailEl.scrollIntoView({ block: "nearest" });
  }

  // ---- chat over Server-Sent Events (fetch + stream reader; EventSource cannot POST) ------
  /** Yields {event, data} from an SSE body: blank-line separated blocks of `event:`/`data:` lines. */
  async function* readSse(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const parse = (block) => {
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // comment / keep-alive ping
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      return data.length ? { event, data: data.join("\n") } : null;
    };
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      buffer = buffer.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) !== -1) {
        const message = parse(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (message) yield message;
      }
      if (done) {
        const message = parse(buffer);
        if (message) yield message;
        return;
      }
    }
  }

  const ask = guarded(async () => {
    const query = $("question").value.trim();
    if (!query) throw new ApiError("Type a question first.");
    const answerEl = $("answer");
    const listEl = $("sources");
    const detailEl = $("source-detail");
    answerEl.replaceChildren(el("span", { className: "muted" }, "Thinking…"));
    answerEl.dataset.state = "streaming";
    listEl.replaceChildren();
    detailEl.hidden = true;
    $("ask").disabled = true;
    let sources = [];
    let text = "";
    let finished = false;
    try {
      const body = { query, stream: true };
      if (state.conversationId) body.conversation_id = state.conversationId;
      const res = await ragFetch("/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
      });
      for await (const { event, data } of readSse(res.body)) {
        const payload = JSON.parse(data);
        if (event === "sources") {
          sources = asList(payload, "sources");
          if (payload.conversation_id) state.conversationId = payload.conversation_id;
          renderSources(listEl, sources, detailEl);
        } else if (event === "delta") {
          text += payload.text ?? "";
          renderCited(answerEl, text, sources, listEl, detailEl);
        } else if (event === "done") {
          finished = true;
          if (payload.conversation_id) state.conversationId = payload.conversation_id;
          if (typeof payload.answer === "string" && !text) {
            text = payload.answer;
            renderCited(answerEl, text, sources, listEl, detailEl);
          }
        } else if (event === "error") {
          const err = payload.error || payload;
          throw new ApiError(`The answer could not be completed: ${err.message || err.code || "unknown error"}.`, { code: err.code || "stream_error" });
        }
      }
      if (!finished) throw new ApiError("The answer stream ended early (the connection was interrupted). Please try again.", { code: "stream_incomplete" });
      if (!text) answerEl.replaceChildren(el("span", { className: "muted" }, "No answer was generated."));
      $("question").value = "";
    } catch (error) {
      if (!text) answerEl.replaceChildren();
      throw error;
    } finally {
      answerEl.dataset.state = finished ? "done" : "failed";
      $("ask").disabled = false;
      loadHistory().catch(showError);
    }
  });

  function newConversation() {
    state.conversationId = null;
    $("answer").replaceChildren();
    $("sources").replaceChildren();
    $("source-detail").hidden = true;
    notice("Started a new conversation.");
  }

  // ---- history ----------------------------------------------------------------------------
  async function loadHistory() {
    const data = await ragJson("/history?page=1");
    const conversations = asList(data, "history", "conversations", "items");
    $("history").replaceChildren(
      ...conversations.map((c) =>
        el("li", { className: "conversation-item", dataset: { id: c.conversation_id || c.id } },
          el("button", { type: "button", className: "link", onclick: guarded(() => openConversation(c.conversation_id || c.id)) }, c.title || "(untitled)"),
          c.message_count != null ? el("span", { className: "muted" }, ` · ${c.message_count} messages`) : null,
        ),
      ),
    );
    $("history-empty").hidden = conversations.length > 0;
  }

  async function openConversation(id) {
    const data = await ragJson(`/history/${encodeURIComponent(id)}`);
    const view = $("conversation");
    view.replaceChildren(
      el("h3", {}, data.title || "Conversation"),
      el("button", { type: "button", className: "secondary", onclick: () => { state.conversationId = data.conversation_id || id; notice("Follow-up questions now continue this conversation."); } }, "Continue this conversation"),
      ...(data.messages || []).map((m) => {
        const box = el("div", { className: `msg ${m.role}`, dataset: { role: m.role } });
        const textEl = el("div", { className: "msg-text" });
        box.append(el("div", { className: "role" }, m.role === "user" ? "You" : "Assistant"), textEl);
        const sources = m.sources || [];
        if (sources.length) {
          const listEl = el("ol", { className: "sources" });
          const detailEl = el("div", { className: "source-detail", hidden: "" });
          renderSources(listEl, sources, detailEl);
          renderCited(textEl, m.content || "", sources, listEl, detailEl);
          box.append(listEl, detailEl);
        } else {
          textEl.textContent = m.content || "";
        }
        if (m.status && m.status !== "complete") box.append(el("small", { className: "muted" }, `(${m.status})`));
        return box;
      }),
    );
  }

  // ---- wiring -------------------------------------------------------------------------------
  $("auth-url").textContent = AUTH_URL;
  $("rag-url").textContent = RAG_URL;
  $("auth-form").addEventListener("submit", signIn);
  $("sign-up").addEventListener("click", signUp);
  $("sign-out").addEventListener("click", signOut);
  $("upload-form").addEventListener("submit", upload);
  $("chat-form").addEventListener("submit", ask);
  $("new-conversation").addEventListener("click", newConversation);
  window.addEventListener("offline", () => showError(new ApiError("You are offline: requests will fail until the network is back.")));
  restoreSession();
})();
