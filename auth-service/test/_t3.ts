import { startTestService } from "./helpers.js";
let t = Date.now();
const s = await startTestService();
console.log("start ms", Date.now() - t);
for (const path of ["/health", "/api/auth/jwks", "/api/auth/jwks"]) { t = Date.now(); await fetch(s.url + path); console.log(path, Date.now() - t); }
t = Date.now();
const r = await fetch(s.url + "/auth/signup", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify({email: `x@e.com`, password: "password123", full_name: "x"})});
console.log("signup", Date.now() - t);
const tok = (await r.json()).session_token;
for (let i = 0; i < 3; i++) { t = Date.now(); await fetch(s.url + "/auth/token", {method: "POST", headers: {authorization: "Bearer " + tok}}); console.log("token", Date.now() - t); }
t = Date.now();
await s.database.close();
console.log("db close ms", Date.now() - t);
t = Date.now();
await s.stop();
console.log("stop ms", Date.now() - t);
