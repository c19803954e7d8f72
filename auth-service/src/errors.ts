// The one error shape of this service, as the rag-service's: `{"error": {"code", "message",
// "request_id"}}`. Our own routes build it here; Better Auth's answers on /api/auth/* are given it
// by src/http.ts withErrorEnvelope.
import { currentRequestId } from "./request-id.js";

export function errorBody(code: string, message: string) {
  return { error: { code, message, request_id: currentRequestId() ?? null } };
}
