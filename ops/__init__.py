"""The operator's side of the server: metrics, access logs, per-address limits, graceful shutdown."""
