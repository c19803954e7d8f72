"""Serves the example web app (examples/web) for `make dev`, on 127.0.0.1 only.

Every file is served as it is, except /config.js: it names the services this `make dev` runs
(AUTH_PORT, RAG_PORT), so the app calls the ports the banner prints, whatever they are. The
tracked examples/web/config.js (the defaults, :3001 and :8000) is what any other web server
serves.

    python scripts/serve_web.py PORT --auth-url http://localhost:3001 --rag-url http://localhost:8000
"""

from __future__ import annotations

import argparse
import functools
import json
from io import BytesIO
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

WEB_DIR = Path(__file__).resolve().parent.parent / "examples" / "web"


def config_script(auth_url: str, rag_url: str) -> bytes:
    config = json.dumps({"authUrl": auth_url, "ragUrl": rag_url})
    return (f"// Written by scripts/serve_web.py for this `make dev` (AUTH_PORT / RAG_PORT).\n"
            f"window.APP_CONFIG = {config};\n").encode()


class WebAppHandler(SimpleHTTPRequestHandler):
    """examples/web, with /config.js naming this run's services."""

    config: bytes = b""

    def send_head(self):  # type: ignore[override]  # GET and HEAD both come through here
        if urlsplit(self.path).path != "/config.js":
            return super().send_head()
        self.send_response(200)
        self.send_header("Content-Type", "text/javascript; charset=utf-8")
        self.send_header("Content-Length", str(len(self.config)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        return BytesIO(self.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--auth-url", required=True)
    parser.add_argument("--rag-url", required=True)
    args = parser.parse_args()
    handler = type("Handler", (WebAppHandler,), {"config": config_script(args.auth_url, args.rag_url)})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), functools.partial(handler, directory=str(WEB_DIR)))
    print(f"serving {WEB_DIR} on http://localhost:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
