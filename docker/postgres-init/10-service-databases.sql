-- One database and one role per service, so the rag-service cannot read the auth-service's
-- tables (password hashes, sessions, JWT signing keys) and neither can touch the other's.
--
-- docker compose mounts this into /docker-entrypoint-initdb.d: it runs once, when the
-- postgres container initializes an empty data directory, as the superuser. Passwords come
-- from the container's environment (psql 15+ \getenv). Names default to auth/rag; tests
-- override them with `psql -v auth_db=... -v auth_role=... -v rag_db=... -v rag_role=...`.
\set ON_ERROR_STOP on

\if :{?auth_db}
\else
\set auth_db auth
\endif
\if :{?auth_role}
\else
\set auth_role auth
\endif
\if :{?rag_db}
\else
\set rag_db rag
\endif
\if :{?rag_role}
\else
\set rag_role rag
\endif

\getenv auth_password AUTH_DB_PASSWORD
\getenv rag_password RAG_DB_PASSWORD
\if :{?auth_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'AUTH_DB_PASSWORD is not set in the postgres container'; END $$;
\endif
\if :{?rag_password}
\else
DO $$ BEGIN RAISE EXCEPTION 'RAG_DB_PASSWORD is not set in the postgres container'; END $$;
\endif

CREATE ROLE :"auth_role" LOGIN PASSWORD :'auth_password';
CREATE ROLE :"rag_role" LOGIN PASSWORD :'rag_password';
-- Each service owns its database; on PostgreSQL 15+ the public schema belongs to the
-- database owner, so each service can run its own migrations there and nobody else can.
CREATE DATABASE :"auth_db" OWNER :"auth_role";
CREATE DATABASE :"rag_db" OWNER :"rag_role";
-- By default every role may connect to every database: only the owner may, here.
REVOKE ALL ON DATABASE :"auth_db" FROM PUBLIC;
REVOKE ALL ON DATABASE :"rag_db" FROM PUBLIC;
