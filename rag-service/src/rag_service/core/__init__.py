"""What every layer may use and none owns: bounded retries (retry.py), the per-process
ingestion gate (ingestion_gate.py), in-process locks per key (locks.py) and organization
roles (roles.py).

Imports nothing of the service but `errors` and `config`, so storage, providers and the
features all depend on it and it on none of them.
"""
