// Reading a document from an answer or a search: the file a document came from, shown beside
// its title, and the document's whole text (GET /documents/{id}) with the cited passage
// marked. chat.js and app.js call these; they only read.
"use strict";

(() => {
  const app = window.ragApp;
  const { el, ragJson } = app;
  const fileNames = new Map(); // document id -> its file's name (source_name), as seen so far

  /** Notes the files of documents listed or read (GET /documents, GET /documents/{id}). */
  function noteFiles(docs) {
    for (const doc of docs) {
      const id = doc.id || doc.document_id;
      if (id && doc.source_name) fileNames.set(id, doc.source_name);
    }
  }

  /** The file's name, to put beside a document's title: null when unknown or the same. */
  function fileNameBeside(documentId, title) {
    const file = fileNames.get(documentId);
    return file && file !== title ? el("span", { className: "file-name", "data-testid": "file-name" }, file) : null;
  }

  /** [start, end] of `passage` in `text`: the service's snippets have their whitespace
   * collapsed and may end in "…", so words are matched with any whitespace between them. */
  function findPassage(text, passage) {
    const words = (passage || "").replace(/…$/, "").trim().split(/\s+/).filter(Boolean);
    if (!words.length) return null;
    const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    const match = new RegExp(escaped.join("\\s+")).exec(text);
    return match ? [match.index, match.index + match[0].length] : null;
  }

  /** Appends the document's whole text to `container` (a source's detail), the passage marked. */
  async function showDocumentText(container, documentId, passage) {
    const holder = el("div", { className: "document-text", "data-testid": "document-text", dataset: { state: "loading" } },
      el("span", { className: "muted" }, "Opening the document…"));
    container.append(holder);
    let doc;
    try {
      doc = await ragJson(`/documents/${encodeURIComponent(documentId)}`);
    } catch (error) {
      holder.dataset.state = "failed";
      holder.replaceChildren(el("span", { className: "muted" }, error.status === 404
        ? "This document is no longer there (deleted, or no longer shared with you)."
        : `The document could not be opened: ${error.message}`));
      return;
    }
    noteFiles([doc]);
    const text = doc.content || "";
    const found = findPassage(text, passage);
    const body = el("div", { className: "document-body" });
    if (found) {
      const [start, end] = found;
      body.append(text.slice(0, start), el("mark", {}, text.slice(start, end)), text.slice(end));
    } else {
      body.append(text);
    }
    holder.replaceChildren(
      el("h5", {}, doc.title, " ", fileNameBeside(documentId, doc.title)),
      body,
    );
    holder.dataset.state = "done";
    const marked = body.querySelector("mark");
    if (marked) marked.scrollIntoView({ block: "nearest" });
  }

  app.reading = { noteFiles, fileNameBeside, showDocumentText, findPassage, reset: () => fileNames.clear() };
})();
