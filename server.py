"""Runs the Binge+ server: ``python server.py [--config PATH] [--host H] [--port N]``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import tornado.httpserver

from ops import access_log, workers
from ops.shutdown import shut_down
from ops.workers import CannotListen
from settings import DEFAULT_CONFIG, ConfigError, Settings, load_settings

log = logging.getLogger("binge.server")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Binge+ media server")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="YAML config file (default: config.yaml)")
    parser.add_argument("--host", help="address to listen on (overrides server.host)")
    parser.add_argument("--port", type=int, help="port to listen on (overrides server.port)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


async def serve(config: Settings, ready: asyncio.Event | None = None) -> None:
    """Serves until SIGTERM or SIGINT, then shuts down gracefully (see :mod:`ops.shutdown`).

    A worker (see :mod:`ops.workers`) shares the port with the others.
    """
    from handlers.app import build_app

    app = await build_app(config, workers.current())
    server = tornado.httpserver.HTTPServer(app, xheaders=False, idle_connection_timeout=60)
    try:
        server.listen(config.server.port, config.server.host, reuse_port=workers.current() is not None)
    except OSError as e:
        await app.close()
        raise CannotListen(f"cannot listen on {config.server.host}:{config.server.port}: {e.strerror}") from None
    log.info("Binge+ serving %s store on http://%s:%d/", app.store.name, config.server.host, config.server.port)
    if app.node_id:
        log.info("peer node %s (its id in Binge-Via) below %s", app.node_id, config.peer.upstream)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready:
        ready.set()
    await stop.wait()
    log.info("shutting down")
    await shut_down(server, app, config.server.shutdown_grace)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    worker = workers.current()
    if worker is not None:
        workers.die_with_supervisor()
    process = "" if worker is None else f" worker {worker.index}"
    logging.basicConfig(level=args.log_level, format=f"%(asctime)s %(levelname)s %(name)s{process}: %(message)s")
    access_log.send_to(sys.stderr)
    overrides = {k: v for k, v in (("server.host", args.host), ("server.port", args.port)) if v is not None}
    if worker is not None:
        overrides["server.port"] = worker.port
    try:
        config = load_settings(args.config, overrides)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    try:
        if worker is None and config.server.workers > 1:
            from ops.limits import shared_counts
            from presence.relay import relaying

            # The counts first: the relay zeroes a dead worker's row in them.
            return workers.supervise(config, services=[shared_counts, relaying])
        asyncio.run(serve(config))
    except CannotListen as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
