// Request ids as the rag-service makes them (rag_service/observability.py): a well-formed incoming
// X-Request-ID is kept (a proxy's or a caller's, so one id can follow a request through both
// services), anything else is replaced by a new uuid4 in hex. The id of the running request is
// echoed on its response and read by error bodies (src/errors.ts) and log lines (src/safe-log.ts).
import { AsyncLocalStorage } from "node:async_hooks";
import { randomUUID } from "node:crypto";

export const REQUEST_ID_HEADER = "X-Request-ID";
/** What an incoming id may be: short, and nothing a log line or a header could be broken with. */
const WELL_FORMED_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

const requestIds = new AsyncLocalStorage<string>();

/** The incoming id when it is well formed, else a new one (32 hex digits, as uuid.uuid4().hex). */
export function requestIdFrom(incoming: string | undefined): string {
  return incoming && WELL_FORMED_REQUEST_ID.test(incoming) ? incoming : randomUUID().replaceAll("-", "");
}

/** Runs `work` (a request, with everything it starts) under `requestId`. */
export function withRequestId<T>(requestId: string, work: () => Promise<T>): Promise<T> {
  return requestIds.run(requestId, work);
}

/** The id of the request this code runs for, or undefined outside a request (start-up, timers). */
export function currentRequestId(): string | undefined {
  return requestIds.getStore();
}
