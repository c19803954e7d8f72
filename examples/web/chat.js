// Answers and history: chat over Server-Sent Events with numbered citations that open their
// source, a plain search, and the conversation history. Search and chat take the collection
// picked in the chat card (collections.js), or every collection the caller can read.
"use strict";

(() => {
  const app = window.ragApp;
  const { $, el, state, ApiError, guarded, notice, ragFetch, ragJson, asList, showError } = app;

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
        // `cited` is known once the answer is done (JSON answers, history); uncited ones are dimmed.
        const className = s.cited === false ? "source uncited" : "source";
        return el("li", { value: String(n), dataset: { n: String(n) }, className, onclick: () => showSource(n, sources, listEl, detailEl) },
          el("strong", {}, s.title || s.document_id),
          app.reading.fileNameBeside(s.document_id, s.title),
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
    app.reading.showDocumentText(detailEl, source.document_id, source.snippet || source.text).catch(showError);
  }

  // ---- chat over Server-Sent Events: app.readSse (sse.js, eventsource-parser) -----------

  /** "Extractive answer (no model)" or "Answered by gemini:gemini-2.5-flash", from the `done` event. */
  function describeMode(outcome) {
    const generator = outcome.generator || "unknown";
    const mode = generator === "extractive" ? "Extractive answer: passages quoted from your documents (no model)" : `Answered by ${generator}`;
    return outcome.answer_found === false ? `${mode} · not found in your documents` : mode;
  }

  /** Applies the answer's outcome: the mode line, cited sources marked, no sources when not found. */
  function showOutcome(outcome, sources, listEl, detailEl) {
    const modeEl = $("answer-mode");
    modeEl.textContent = describeMode(outcome);
    modeEl.hidden = false;
    $("answer").dataset.found = String(outcome.answer_found !== false);
    const cited = new Set(outcome.cited_sources || []);
    const marked = sources.map((s, i) => ({ ...s, cited: cited.has(sourceNumber(s, i)) }));
    // Not found: the retrieved passages did not answer, so they are not shown as its sources.
    $("sources-block").hidden = outcome.answer_found === false;
    if (outcome.answer_found !== false) renderSources(listEl, marked, detailEl);
    else detailEl.hidden = true;
    return marked;
  }

  const ask = guarded(async () => {
    const query = $("question").value.trim();
    if (!query) throw new ApiError("Type a question first.");
    const answerEl = $("answer");
    const listEl = $("sources");
    const detailEl = $("source-detail");
    clearSearchResults();
    answerEl.replaceChildren(el("span", { className: "muted" }, "Thinking…"));
    answerEl.dataset.state = "streaming";
    listEl.replaceChildren();
    detailEl.hidden = true;
    $("answer-mode").hidden = true;
    $("sources-block").hidden = false;
    delete answerEl.dataset.found;
    $("ask").disabled = true;
    let sources = [];
    let text = "";
    let finished = false;
    try {
      const body = { query, stream: true };
      if (state.conversationId) body.conversation_id = state.conversationId;
      const filters = app.collections.searchFilters();
      if (filters) body.filters = filters;
      const res = await ragFetch("/chat", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
      });
      for await (const { event, data } of app.readSse(res.body)) {
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
          }
          sources = showOutcome(payload, sources, listEl, detailEl);
          renderCited(answerEl, text, sources, listEl, detailEl);
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

  // ---- search: the matching passages, without an answer -----------------------------------------
  const SNIPPET_CHARS = 240;

  /** A new answer replaces what a previous search showed above it. */
  function clearSearchResults() {
    $("search-results").replaceChildren();
    delete $("search-results").dataset.state;
  }

  const search = guarded(async () => {
    const query = $("question").value.trim();
    if (!query) throw new ApiError("Type what to search for first.");
    const body = { query, top_k: 5, include_embedding: false };
    const filters = app.collections.searchFilters();
    if (filters) body.filters = filters;
    const results = $("search-results");
    results.dataset.state = "searching";
    $("search").disabled = true;
    try {
      const data = await ragJson("/search", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const hits = asList(data, "results");
      results.replaceChildren(...(hits.length ? hits.map((hit) =>
        el("li", { className: "hit", dataset: { documentId: hit.document_id } },
          el("strong", {}, hit.title || hit.document_id),
          app.reading.fileNameBeside(hit.document_id, hit.title),
          el("span", { className: "muted" }, ` · chunk ${hit.chunk_index}`),
          el("div", { className: "snippet" }, hit.text.length > SNIPPET_CHARS ? `${hit.text.slice(0, SNIPPET_CHARS)}…` : hit.text),
        )) : [el("li", { className: "muted empty" }, filters ? "Nothing found in this collection." : "Nothing found in your collections.")]));
      results.dataset.state = "done";
    } catch (error) {
      results.replaceChildren();
      results.dataset.state = "failed";
      throw error;
    } finally {
      $("search").disabled = false;
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
        // A "not found" answer cites none of its retrieved sources: they are not listed.
        const citesNothing = sources.length > 0 && sources.every((s) => s.cited === false);
        if (sources.length && !citesNothing) {
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

  $("chat-form").addEventListener("submit", ask);
  $("search").addEventListener("click", search);
  $("new-conversation").addEventListener("click", newConversation);

  app.chat = { loadHistory };
})();
