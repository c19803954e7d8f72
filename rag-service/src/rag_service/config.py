"""The one settings object. Read once at start-up (`get_settings`) and passed down.

Every field maps to an environment variable of the same name in upper case
(e.g. `database_url` <- `DATABASE_URL`). Defaults are the embedded, zero-config setup.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- server -----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    # Browser apps on other origins (comma-separated), e.g. the example web app.
    cors_origins: str = ""
    # development | test | production. Production turns the API docs off by default.
    # (Not read from a bare ENV variable: POSIX shells use $ENV for a start-up file path.)
    rag_env: Literal["development", "test", "production"] = "development"
    # /docs, /redoc and /openapi.json. Unset -> on, except when RAG_ENV=production.
    api_docs_enabled: bool | None = None
    # /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>`; unset -> no /metrics.
    metrics_token: str | None = None
    # Largest request line + headers accepted (bytes); more -> 400 and the connection closes.
    max_request_header_bytes: int = 32_768
    # /health: seconds each check (database, vector store) may take before it counts as down.
    health_check_timeout_seconds: float = Field(default=3.0, gt=0)

    # --- storage ----------------------------------------------------------------------
    # Where the embedded stores live (SQLite file, Qdrant Edge shard).
    data_dir: Path = Path("./data")
    # Unset -> SQLite in DATA_DIR/rag.db. Set -> Postgres (psycopg 3), e.g. Neon.
    database_url: str | None = None
    # Where the chunks' vectors live. Unset: Qdrant Edge in DATA_DIR/qdrant, or the Qdrant
    # server at QDRANT_URL when that is set. `pgvector`: a table in DATABASE_URL's Postgres
    # (needs the pgvector extension, e.g. Neon), so one Postgres holds everything.
    vector_store: Literal["edge", "qdrant", "pgvector"] | None = None
    # Qdrant Edge in a child process (storage/edge_process.py): qdrant-edge-py holds the GIL
    # for a whole search, so in-process every search stalls every other request (/health
    # too). False: the shard in the server process (one process fewer, same behaviour).
    qdrant_edge_process: bool = True
    # Qdrant server / cluster URL (VECTOR_STORE unset or `qdrant`).
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    # Prefix of the collection name; model name and dimension are appended.
    qdrant_collection_prefix: str = "chunks"
    qdrant_timeout_seconds: float = Field(default=10.0, gt=0)
    # Postgres (DATABASE_URL): connections kept open per process, extra ones allowed under
    # load, and seconds to wait for a new connection.
    database_pool_size: int = Field(default=10, ge=1)
    database_pool_max_overflow: int = Field(default=10, ge=0)
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    # SQLite (no DATABASE_URL): how long a write waits for another writer's lock (ms).
    sqlite_busy_timeout_ms: int = Field(default=20_000, ge=0)
    # VECTOR_STORE=pgvector: its own connection pool, the wait for a free connection, and
    # the longest one statement may run (ms).
    pgvector_pool_max_size: int = Field(default=10, ge=1)
    pgvector_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    pgvector_statement_timeout_ms: int = Field(default=30_000, ge=1)

    # --- auth (JWTs issued by the auth-service) ---------------------------------------
    auth_jwks_url: str = "http://localhost:3001/api/auth/jwks"
    auth_issuer: str = "http://localhost:3001"
    auth_audience: str = "rag-service"
    # Only asymmetric algorithms; never "none" or HS*.
    auth_algorithms: list[str] = Field(default_factory=lambda: ["EdDSA", "ES256", "RS256"])
    jwks_cache_seconds: int = 300
    # Minimum seconds between JWKS refetches triggered by an unknown `kid`.
    jwks_refetch_min_interval: float = 10.0
    jwks_timeout_seconds: float = 5.0
    jwt_leeway_seconds: int = 5
    # Longer bearer tokens are refused before parsing (an access token with 50 organizations
    # is ~4.5 KB); API keys longer than max_api_key_chars likewise.
    max_token_chars: int = Field(default=16_384, ge=1_024)
    max_api_key_chars: int = Field(default=256, ge=32)
    # The auth-service's account events feed (accounts/): user and organization deletions are
    # erased here, membership changes make older tokens with `orgs` stale (401 token_stale).
    # The feed answers only `Authorization: Bearer <ACCOUNT_EVENTS_TOKEN>` (the same secret on
    # both services, at least 32 characters). Unset: a warning at start and no polling (no
    # erasure, no staleness signal); RAG_ENV=production refuses to start without it.
    account_events_token: str | None = Field(default=None, min_length=32, repr=False)
    # Seconds between polls of the feed (by every replica for the staleness signal, by one
    # replica at a time for erasure). 0 = never poll.
    account_events_poll_seconds: float = Field(default=5.0, ge=0)
    # Unset -> beside AUTH_JWKS_URL (…/api/auth/jwks -> …/auth/events).
    auth_events_url: str | None = None
    # How far back a replica reads membership changes when it starts: the longest an access
    # token lives (the auth-service's JWT_EXPIRES_IN, 15 minutes) plus a margin. A change
    # older than this cannot make any live token stale.
    access_token_max_age_seconds: int = Field(default=960, ge=1)
    # Membership changes remembered per replica; past it the oldest fold into one cutoff
    # (tokens older than it are stale: conservative, never permissive).
    max_tracked_membership_changes: int = Field(default=200_000, ge=1)
    # API keys as bearer tokens (auth/api_keys.py): the auth-service's answer for a key is
    # remembered this many seconds, so a revoked or expired key is refused at most this long
    # after the revocation. Each key costs at most one exchange per window per replica,
    # counted against its own limit at the auth-service (API_KEY_RATE_LIMIT_MAX, 30/min):
    # keep 60 / API_KEY_CACHE_SECONDS x replicas below it. Capped below the JWT lifetime.
    api_key_cache_seconds: float = Field(default=10.0, gt=0, le=300)
    # Unset -> Better Auth's exchange beside AUTH_JWKS_URL (…/api/auth/api-key/token).
    auth_api_key_exchange_url: str | None = None
    # This service's public base URL (e.g. https://rag.example.com), named as the MCP server's
    # resource in its OAuth protected-resource metadata (agents/resource_metadata.py).
    # Unset -> taken from each request (its scheme and Host header).
    public_url: str | None = None

    # --- embeddings -------------------------------------------------------------------
    embedding_provider: Literal["auto", "local", "gemini", "openai"] = "auto"
    local_embedding_model: str = "all-MiniLM-L6-v2"
    # Texts per encoder call when ingesting: a search query waits behind at most one
    # such sub-batch (queries are served first), so keep it small.
    embedding_batch_size: int = 16
    # Local encoder: ONNX Runtime on the packaged weights (`onnx` fp32, `onnx-int8`
    # quantized), exported into MODEL_CACHE_DIR at first start and checked against torch;
    # or `torch` (sentence-transformers). onnx gives torch's vectors (cosine 1.0000) with a
    # one-text query in ~15 ms instead of ~70 ms (bench/encoder_backends.py).
    embedding_backend: Literal["torch", "onnx", "onnx-int8"] = "onnx"
    # Where exported graphs are kept. Unset -> DATA_DIR/models. Processes may share one
    # (replicas, test runs): the first exports, the others wait for it and reuse it.
    model_cache_dir: Path | None = None
    # Intra-op threads of the local encoder for ingestion batches and for search queries;
    # 0 = one per core (the library default). 1 holds up on a shared host, where a query
    # with one thread per core took 10-20x longer (bench/encoder_threads.py); on a machine
    # of its own, EMBEDDING_THREADS=0 speeds up ingestion.
    embedding_threads: int = Field(default=1, ge=0)
    embedding_query_threads: int = Field(default=1, ge=0)
    # Encoder threads ("query lanes") beside the first one: they serve search queries first
    # and, with ONNX, borrow ingestion sub-batches while no query waits (a query interrupts
    # a borrowed sub-batch), so ingestion uses every core and searches never wait behind
    # it. 0 = one thread for everything (queries still go first). See encoder_worker.py.
    embedding_query_workers: int = Field(default=1, ge=0, le=16)
    # Deadline of one local encoder call: past it the callers get 503, the call is
    # interrupted and the lane replaced (a sub-batch takes ~1 s on one core).
    embedding_timeout_seconds: float = Field(default=60.0, gt=0)
    # Concurrent search queries arriving within this window share one encoder call.
    embedding_query_batch_wait_ms: float = Field(default=2.0, ge=0, le=100)
    embedding_query_batch_size: int = Field(default=32, ge=1)
    gemini_api_key: str | None = None
    gemini_embedding_model: str = "gemini-embedding-001"
    gemini_embedding_dimension: int = 768
    gemini_timeout_seconds: float = 30.0
    gemini_max_retries: int = 4
    # EMBEDDING_PROVIDER=openai: any OpenAI-compatible POST /embeddings server (Ollama, Text
    # Embeddings Inference, vLLM, OpenAI), separate from the answer model's OPENAI_* settings.
    # Model and dimension name the collection (a new vector space: fill it with `rag reindex`).
    openai_embedding_base_url: str = "http://localhost:11434/v1"
    openai_embedding_api_key: str | None = None
    openai_embedding_model: str = "nomic-embed-text"
    openai_embedding_dimension: int = Field(default=768, ge=1, le=16_000)
    # Send `dimensions` (OpenAI text-embedding-3 and other Matryoshka models shorten their
    # output); most self-hosted servers reject it, so off by default.
    openai_embedding_send_dimensions: bool = False
    # Prefixes some models are trained with, e.g. nomic-embed-text "search_query: " /
    # "search_document: ", e5 "query: " / "passage: ".
    openai_embedding_query_prefix: str = ""
    openai_embedding_document_prefix: str = ""
    openai_embedding_max_tokens: int = Field(default=512, ge=16)
    openai_embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    openai_embedding_timeout_seconds: float = Field(default=30.0, gt=0)
    openai_embedding_max_retries: int = Field(default=4, ge=0)

    # --- answers ----------------------------------------------------------------------
    llm_provider: Literal["auto", "extractive", "gemini", "openai"] = "auto"
    gemini_chat_model: str = "gemini-2.5-flash"
    openai_base_url: str = "http://localhost:11434/v1"
    openai_api_key: str | None = None
    openai_model: str = "llama3.2"
    llm_timeout_seconds: float = 60.0
    llm_max_retries: int = 3

    # --- chunking ---------------------------------------------------------------------
    chunk_size_tokens: int = 200
    chunk_overlap_tokens: int = 30
    # Characters per chunk, at most, whatever the text (a line without spaces, a 2 MB table
    # cell): with the token bound it caps every search hit and every source given to a model.
    chunk_max_chars: int = Field(default=2_000, ge=200, le=100_000)

    # --- limits -----------------------------------------------------------------------
    max_document_chars: int = 2_000_000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_files_per_upload: int = 20
    # POST /documents/batch: items per request, and the documents' bytes in one request
    # (text items' UTF-8 content plus files as sent); over either the request is a 413.
    max_batch_items: int = Field(default=100, ge=1)
    max_batch_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    # Room in a batch's body for its JSON or multipart framing, beyond max_batch_bytes (and a
    # quarter more for JSON escapes); a larger body is refused before it is read.
    batch_body_margin_bytes: int = Field(default=64 * 1024, ge=0)
    max_query_chars: int = 2_000
    max_embed_chars: int = 20_000
    max_title_chars: int = 500
    max_metadata_bytes: int = 16_384
    max_page_size: int = 100
    # Highest `page` number of the paginated lists (documents, conversations).
    max_page: int = Field(default=1_000_000, ge=1)
    # Results of one /search (and the MCP `search` tool), and passages one /chat answers from.
    max_search_top_k: int = Field(default=50, ge=1)
    max_chat_top_k: int = Field(default=20, ge=1)
    # Collections one user or organization may own.
    max_collections_per_owner: int = Field(default=200, ge=1)
    max_history_turns: int = 20
    # Characters of one chat answer, at most: a model's output is cut there (the stored
    # answer too). Largest /chat JSON answer ~ max_answer_chars + top_k x chunk_max_chars
    # (context_used) + top_k x ~700 (sources); see README "Limits".
    max_answer_chars: int = Field(default=20_000, ge=100)

    # --- file extraction sandbox (documents/sandbox.py) ---------------------------------
    # Worker processes reading uploaded files; each file runs under these limits, over
    # which the upload is refused with a 413/422 naming the limit.
    extraction_workers: int = Field(default=2, ge=1, le=64)
    extraction_timeout_seconds: float = Field(default=60.0, gt=0)
    extraction_cpu_seconds: int = Field(default=30, ge=1)
    extraction_memory_mb: int = Field(default=1024, ge=128)
    extraction_max_html_elements: int = Field(default=500_000, ge=1)
    # libxml2 stops at 256 levels; deeper caps are lowered to 255.
    extraction_max_html_depth: int = Field(default=200, ge=1)
    extraction_max_pdf_pages: int = Field(default=2_000, ge=1)
    # How workers are isolated (documents/isolation.py): `auto` = bubblewrap when usable,
    # else Landlock and seccomp when the kernel allows them, else a logged warning
    # (development/test) or a refusal to start (production); `bwrap` / `landlock` = that
    # one or refuse to start; `none` = without isolation, on purpose.
    extraction_isolation: Literal["auto", "bwrap", "landlock", "none"] = "auto"

    # --- quotas and ingestion -----------------------------------------------------------
    # Per owner: a document counts against the owner of its collection (documents/quotas.py).
    # A user's personal collections; 0 = unlimited. Every stored document counts (failed ones
    # too, until deleted).
    quota_max_documents: int = Field(default=1_000, ge=0)
    quota_max_characters: int = Field(default=50_000_000, ge=0)
    # An organization's collections (whoever saved into them); 0 = unlimited.
    quota_org_max_documents: int = Field(default=10_000, ge=0)
    quota_org_max_characters: int = Field(default=500_000_000, ge=0)
    # Characters of chat history (questions and stored answers) per user; over it a new chat
    # turn is a 413 `history_quota_exceeded` until conversations are deleted.
    quota_max_history_characters: int = Field(default=10_000_000, ge=0)
    # Ingestions running at once in one process (0 = no cap); more wait up to the timeout,
    # then get 503 `busy` with Retry-After.
    ingest_concurrency: int = Field(default=4, ge=0)
    # Slots one account may hold at once (0 = half of INGEST_CONCURRENCY, rounded up): the
    # rest stay free for other accounts while one floods (core/ingestion_gate.py).
    ingest_concurrency_per_account: int = Field(default=0, ge=0)
    # SIGTERM: requests still running after this many seconds are cancelled; interrupted
    # ingestions are finished by repair after the next start (the process exits in < 10 s).
    shutdown_grace_seconds: float = Field(default=3.0, ge=0, le=30)
    ingest_queue_timeout_seconds: float = Field(default=30.0, ge=0)
    # Chunks per embed call / upsert; the ingestion claim is refreshed after each batch.
    ingest_batch_size: int = Field(default=256, ge=1)
    # An `indexing` claim whose heartbeat is older than this is stale: repair re-indexes it.
    ingest_claim_lease_seconds: float = Field(default=300.0, gt=0)
    # How often each process looks for stale claims after start-up (0 = start-up only).
    ingest_repair_interval_seconds: float = Field(default=60.0, ge=0)

    # --- rate limiting ----------------------------------------------------------------
    redis_url: str | None = None
    # Connect and reply timeout of Redis: short, so a dead Redis costs little.
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    rate_limit_enabled: bool = True
    rate_limit_cheap: str = "300/minute"
    rate_limit_costly: str = "60/minute"
    # Ingestion (save, upload, batch) is budgeted in bytes, not requests: each request spends
    # the bytes of its documents (ratelimit.py). 100 MB a minute is far above what one
    # encoder indexes (~1.5 MB of text a minute on 2 cores), so a client loading thousands
    # of documents never waits on it; a flood of large files does.
    rate_limit_ingest_bytes: str = "100000000/minute"

    @field_validator("api_docs_enabled", "model_cache_dir", "account_events_token", "auth_events_url", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `API_DOCS_ENABLED=` (e.g. from a compose `${VAR:-}`) means "not set", not an error
        # (and `MODEL_CACHE_DIR=` not the working directory).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("auth_algorithms")
    @classmethod
    def _only_asymmetric(cls, algorithms: list[str]) -> list[str]:
        unsafe = [a for a in algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if unsafe:
            raise ValueError(f"AUTH_ALGORITHMS must not contain {unsafe}: only asymmetric keys")
        return algorithms

    @model_validator(mode="after")
    def _production_reads_the_account_events(self) -> Settings:
        if self.rag_env == "production" and not self.account_events_token:
            raise ValueError("RAG_ENV=production needs ACCOUNT_EVENTS_TOKEN (the auth-service's account events "
                             "feed: without it deleted accounts are never erased)")
        return self

    @model_validator(mode="after")
    def _vector_store_has_its_server(self) -> Settings:
        if self.vector_store == "qdrant" and not self.qdrant_url:
            raise ValueError("VECTOR_STORE=qdrant needs QDRANT_URL")
        if self.vector_store == "pgvector" and not self.database_url:
            raise ValueError("VECTOR_STORE=pgvector needs DATABASE_URL (a Postgres with the pgvector extension)")
        return self

    @property
    def resolved_vector_store(self) -> Literal["edge", "qdrant", "pgvector"]:
        if self.vector_store is None:
            return "qdrant" if self.qdrant_url else "edge"
        return self.vector_store

    @property
    def sqlalchemy_url(self) -> str:
        """Async SQLAlchemy URL: psycopg 3 for Postgres, aiosqlite for the embedded file."""
        if self.database_url:
            url = self.database_url
            for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'rag.db').as_posix()}"

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def resolved_embedding_provider(self) -> Literal["local", "gemini", "openai"]:
        if self.embedding_provider == "auto":
            return "gemini" if self.gemini_api_key else "local"
        return self.embedding_provider

    @property
    def resolved_llm_provider(self) -> Literal["extractive", "gemini", "openai"]:
        if self.llm_provider == "auto":
            return "gemini" if self.gemini_api_key else "extractive"
        return self.llm_provider

    @property
    def api_docs_on(self) -> bool:
        if self.api_docs_enabled is not None:
            return self.api_docs_enabled
        return self.rag_env != "production"

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
