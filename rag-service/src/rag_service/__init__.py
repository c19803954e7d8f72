"""RAG service: private documents, hybrid search and cited chat behind Better Auth JWTs."""
