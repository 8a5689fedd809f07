"""HTTP: a minimal twisted.web listener; so far only GET /metrics and GET /healthz (server.py)."""
