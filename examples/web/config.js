// Service URLs for the example app. Edit here, or override per page load with
// ?auth=http://localhost:3001&rag=http://localhost:8000 in the address bar.
// Use "localhost" (not 127.0.0.1) for the app and both services, so the auth-service's
// session cookie is same-site with the page and is sent by fetch(..., {credentials: "include"}).
window.APP_CONFIG = {
  authUrl: "http://localhost:3001",
  ragUrl: "http://localhost:8000",
};
