-- The pgvector profile only (docker-compose.yml mounts this after 10-service-databases.sql):
-- the `vector` extension is not a trusted extension, so the rag-service's role (no superuser,
-- as it should be) cannot create it; the superuser does, once, in the rag-service's database.
-- The rag-service's own `CREATE EXTENSION IF NOT EXISTS vector` then finds it made.
-- Tests pass the database's name with `psql -v rag_db=...`; compose uses the default, rag.
\set ON_ERROR_STOP on

\if :{?rag_db}
\else
\set rag_db rag
\endif

\connect :"rag_db"
CREATE EXTENSION IF NOT EXISTS vector;
