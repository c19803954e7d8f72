#!/usr/bin/env bash
# Installs Debian's bubblewrap (`bwrap`), which isolates the rag-service's file extraction
# workers (rag-service/src/rag_service/documents/isolation.py), if it is missing.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
  echo "bubblewrap present: $(bwrap --version)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo"; else
    echo "!! bubblewrap (bwrap) is missing and this is not root: install it (apt-get install -y bubblewrap)." >&2
    echo "!! Until then file extraction runs without isolation (a warning is logged; RAG_ENV=production refuses)." >&2
    exit 0
  fi
fi
echo ">> bwrap is missing; installing Debian's bubblewrap package (apt-get)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends bubblewrap || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends bubblewrap; }
bwrap --version
