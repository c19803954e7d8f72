// Server-Sent Events for chat.js: the `POST /chat` stream, read from the fetch response body
// (EventSource cannot POST) with eventsource-parser, a maintained parser of the WHATWG event
// stream format (vendored and pinned in vendor/, see vendor/README.md). It handles what a
// hand-written splitter got wrong: a "\r\n" line end split across two network chunks.
// An ES module (index.html loads it with type="module", in order with the other scripts).
import { createParser } from "./vendor/eventsource-parser-4.1.3/index.js";

/** Yields {event, data} per event of a byte stream (a fetch Response body); an event the
 * stream ends before finishing (no blank line after it) is dropped, as EventSource does. */
async function* readSse(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const ready = [];
  const parser = createParser({ onEvent: ({ event, data }) => ready.push({ event: event || "message", data }) });
  let ended = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        ended = true;
        return;
      }
      parser.feed(value);
      while (ready.length) yield ready.shift();
    }
  } finally {
    // A caller that stops early (an `error` event) closes the connection instead of reading on.
    if (!ended) await reader.cancel().catch(() => {});
  }
}

window.ragApp.readSse = readSse;
