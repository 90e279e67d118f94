"""``python -m service`` / ``jepa-serve``: parse settings (flags over ``JEPA_*`` env), serve with uvicorn.

SIGTERM / SIGINT start a drain: ``/ready`` turns 503 and new ``/embed`` requests get 503, while
accepted ones finish (up to ``drain_timeout_s``); then uvicorn shuts down and the process exits 0.
A second signal exits at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import typing
from collections.abc import Sequence
from types import FrameType

import uvicorn
from pydantic import ValidationError

from service import access_log
from service.settings import Settings
from service.state import AppState

log = logging.getLogger("service")


def build_parser() -> argparse.ArgumentParser:
    """One ``--flag`` per Settings field, with the field's description as help."""
    parser = argparse.ArgumentParser(
        prog="jepa-serve", description="Serve I-JEPA image embeddings over HTTP. Every flag is also JEPA_<NAME>."
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # argparse %-formats help strings: a literal % in a description must be doubled.
        help_text = f"{field.description} (env JEPA_{name.upper()}; default {field.default!r})".replace("%", "%%")
        if typing.get_origin(field.annotation) is typing.Literal:
            choices = [str(c) for c in typing.get_args(field.annotation)]
            parser.add_argument(flag, dest=name, choices=choices, help=help_text)
        elif field.annotation is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, help=help_text)
    return parser


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if v is not None}
    return Settings(**given)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM drains the app before uvicorn's own shutdown begins."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        state.on_start_failed = self._start_failed

    def _start_failed(self) -> None:  # a background start-up (after a build) failed: exit non-zero
        self.should_exit = True

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or not self.started or self._loop is None:
            self.should_exit = True  # second signal, or not serving yet: stop now
            self.force_exit = self._drain_task is not None
            return
        self.state.draining = True  # /ready answers 503 from now on
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        self._drain_task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        log.info("signal received: draining (%d requests in flight)", self.state.inflight)
        settings = self.state.settings
        started = asyncio.get_running_loop().time()
        done = await self.state.drain(settings.drain_timeout_s)
        if not done:
            log.warning("drain timed out with %d requests in flight", self.state.inflight)
        # Keep listening (ready 503, new work 503) until load balancers have seen us leave.
        remaining = settings.shutdown_delay_s - (asyncio.get_running_loop().time() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)
        self.should_exit = True


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
        logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s:     %(name)s: %(message)s")
        access_log.configure(settings.access_log)
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)  # process-wide: set here, once
        from service.app import create_app

        app = create_app(settings)
    except (ValidationError, ValueError) as e:
        print(f"jepa-serve: {e}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 1, access_log=False,
    )  # fmt: skip
    server = DrainingServer(config, app.state.jepa)
    server.run()
    return 0 if server.started and app.state.jepa.start_error is None else 1


if __name__ == "__main__":
    sys.exit(main())
