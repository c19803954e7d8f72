// Shared by the example app's scripts (core.js, orgs.js, account.js, collections.js, chat.js, app.js; plain
// scripts loaded in that order, no bundler): configuration, errors as sentences, the
// auth-service session and access JWT, rag-service calls and a tiny DOM helper. Everything is
// published on `window.ragApp`, which the other scripts read and the browser tests inspect.
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
    orgs: [], // the token's `orgs` claim: [{id, role}], the active organization first
  };
  // The scripts' shared namespace; the browser tests read `state` through it too.
  const app = (window.ragApp = { state, AUTH_URL, RAG_URL });

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

  /** "you are not allowed" -> "You are not allowed." (Better Auth's messages lack both). */
  function sentence(text) {
    const trimmed = text.trim();
    if (!trimmed) return "";
    const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
    return /[.!?)]$/.test(capital) ? capital : `${capital}.`;
  }

  /** Builds an ApiError from a non-2xx response: both services answer {error: {code, message, request_id}}. */
  async function errorFromResponse(res, service) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      /* not JSON */
    }
    const err = (body && typeof body.error === "object" && body.error) || {};
    const code = String(err.code || "").toLowerCase() || `http_${res.status}`;
    const serverMessage = typeof err.message === "string" ? sentence(err.message) : "";
    const retryAfter = retryAfterSeconds(res);
    let message;
    if (res.status === 429) {
      const wait = retryAfter != null ? `${retryAfter} second${retryAfter === 1 ? "" : "s"}` : "a minute";
      message = `Too many requests to the ${service}. Please wait ${wait} and try again.`;
    } else if (res.status === 413) {
      message = `That file is too large for the ${service}${serverMessage ? ` (${serverMessage})` : ""}.`;
    } else if (res.status === 401 && (code === "invalid_email_or_password" || code === "invalid_credentials")) {
      message = "Wrong email or password.";
    } else if (res.status === 403 && code === "email_not_verified") {
      message = "Confirm your email address first: we sent you a new link, check your inbox.";
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
          const { exp, orgs } = decodeJwtPayload(token);
          state.token = token;
          state.tokenExp = exp;
          state.orgs = Array.isArray(orgs) ? orgs : [];
          state.tokenMints += 1;
          scheduleRefresh();
          return token;
        } catch (error) {
          if (error.status === 401) {
            app.signedOut("Your session has ended. Please sign in again.");
          }
          throw error;
        } finally {
          state.minting = null;
        }
      })();
    }
    return state.minting;
  }

  /** A token minted after now (a mint already in flight may predate a membership change). */
  async function remintToken() {
    if (state.minting) await state.minting.catch(() => {});
    return mintToken();
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

  /** POST a FormData to the rag-service with upload progress (fetch has none):
   * onProgress(sentBytes, totalBytes) while the body is sent. Same token handling and
   * errors as ragJson. */
  async function ragUpload(path, form, onProgress) {
    for (let attempt = 0; ; attempt++) {
      const token = attempt === 0 ? await accessToken() : await mintToken();
      const res = await new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        xhr.open("POST", `${RAG_URL}${path}`);
        xhr.setRequestHeader("Authorization", `Bearer ${token}`);
        xhr.upload.addEventListener("progress", (event) => {
          if (event.lengthComputable) onProgress(event.loaded, event.total);
        });
        xhr.addEventListener("load", () => resolve(new Response(xhr.responseText, {
          status: xhr.status,
          headers: { "Content-Type": xhr.getResponseHeader("Content-Type") || "application/json",
                     "Retry-After": xhr.getResponseHeader("Retry-After") || "" },
        })));
        xhr.addEventListener("error", () => reject(new ApiError(
          `Cannot reach the rag-service at ${new URL(RAG_URL, location.href).origin}. Is it running? (network error)`,
          { code: "network_error" })));
        xhr.send(form);
      });
      if (res.status === 401 && attempt === 0) continue;
      if (!res.ok) throw await errorFromResponse(res, "rag-service");
      return res.json();
    }
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

  /** The array in `data` (a bare list, or under the first of `keys` that holds one). */
  const asList = (data, ...keys) => {
    if (Array.isArray(data)) return data;
    for (const key of keys) if (data && Array.isArray(data[key])) return data[key];
    return [];
  };

  /** Fills a <select> with [{value, label}] and keeps the current choice when it still exists. */
  function fillSelect(select, options, preferred) {
    const keep = preferred ?? select.value;
    select.replaceChildren(...options.map(({ value, label }) => el("option", { value }, label)));
    if (options.some((o) => o.value === keep)) select.value = keep;
  }

  Object.assign(app, {
    $, ApiError, showError, clearError, notice, guarded, authCall, mintToken, remintToken,
    ragFetch, ragJson, ragUpload, el, asList, fillSelect,
    signedOut: () => {}, // set by app.js
  });
})();
