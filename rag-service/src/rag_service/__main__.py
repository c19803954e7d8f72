"""`python -m rag_service` runs the HTTP server (same as `rag serve`)."""

from rag_service.main import run

if __name__ == "__main__":
    run()
