#!/usr/bin/env bash
# Start the local services the suites use when they are installed but stopped.
# Neither is required to be installed: without a system PostgreSQL on 127.0.0.1:5432 the
# suites run on an embedded PostgreSQL 18 that scripts/test_postgres.py starts (make test does
# that); a missing Redis skips its tests locally and fails them under CI=true.
set -euo pipefail
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo ">> starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && break; sleep 1; done
  fi
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo ">> no system PostgreSQL on 127.0.0.1:5432: the tests use an embedded PostgreSQL 18 instead"
fi
if command -v redis-server >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
  echo ">> starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
