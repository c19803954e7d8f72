// The one error shape of this service's own routes: `{"error": {"code", "message"}}`.
export function errorBody(code: string, message: string) {
  return { error: { code, message } };
}
