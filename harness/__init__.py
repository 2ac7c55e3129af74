"""What the tests and the benchmarks share to run Binge+ for real: servers, clients and media on loopback.

Nothing here is a test, and nothing here imports one: a benchmark may use
any of it. ``server_process`` runs ``server.py`` in a process of its own,
``in_process`` serves an app on the caller's event loop (or a loop of its
own), ``nodes`` and ``presence`` are origins, peer nodes and presence
instances built on those, ``pravega`` a standalone Pravega of one's own,
``http`` and ``clients`` the clients that talk to them, ``media`` the
files they serve, ``loopback`` ports, processes and polling.
"""
