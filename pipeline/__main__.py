"""Command line: ``python -m pipeline run|config ...``."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import yaml

from .config import load_config
from .errors import CascadeError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a conversation: live, or from a WAV file (--input)")
    run.add_argument("--config", default="configs/default.yaml", help="YAML config file")
    run.add_argument("--input", type=Path, help="WAV file to replay instead of a microphone")
    run.add_argument("--output-dir", type=Path, default=Path("out"),
                     help="where conversation.wav, transcript.jsonl, timeline.jsonl go")
    run.add_argument("--fast", action="store_true",
                     help="file mode: skip idle waits instead of replaying in real time")
    run.add_argument("--input-device", help="live: microphone index or name (overrides YAML)")
    run.add_argument("--output-device", help="live: speaker index or name (overrides YAML)")
    run.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    sub.add_parser("devices", help="list audio devices")
    cfg = sub.add_parser("config", help="validate a config and print its effective values")
    cfg.add_argument("--config", default="configs/default.yaml")
    srv = sub.add_parser("serve", help="the OpenAI Realtime WebSocket server and its web page")
    srv.add_argument("--config", default="configs/default.yaml")
    srv.add_argument("--port", type=int, help="TCP port (overrides server.port)")
    srv.add_argument("--host", help="address to bind (overrides server.host)")
    chk = sub.add_parser("check", help="validate a config, load each stage and run a tiny "
                         "request through it")
    chk.add_argument("--config", default="configs/default.yaml")
    return p


def _device(spec):
    return int(spec) if spec is not None and spec.isdigit() else spec


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "devices" or getattr(args, "list_devices", False):
            from .devices import describe, list_devices, open_pyaudio
            pa = open_pyaudio()
            try:
                print(describe(list_devices(pa)))
            finally:
                pa.terminate()
            return 0
        config = load_config(args.config)
        if args.command == "config":
            print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
            return 0
        if args.command == "check":
            from .check import check
            return 0 if asyncio.run(check(config)) else 1
        if args.command == "serve":
            from .server import serve
            serve(config, args.port, args.host)
            return 0
        if args.command == "run":
            if args.input is None:
                from .live import run_live  # PyAudio is needed only here
                session = run_live(config, args.output_dir, _device(args.input_device),
                                   _device(args.output_device))
            else:
                from .filemode import run_file
                session = run_file(config, args.input, args.output_dir, fast=args.fast)
            if _run_stoppable(session):
                print("\nstopped (SIGTERM); the transcript so far is in "
                      f"{args.output_dir}/transcript.jsonl", file=sys.stderr)
                return 128 + signal.SIGTERM
            if args.input is not None:
                print(f"wrote {args.output_dir}/conversation.wav, transcript.jsonl, timeline.jsonl")
            return 0
    except CascadeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nstopped", file=sys.stderr)
        return 128 + signal.SIGINT
    return 1


def _run_stoppable(coro) -> bool:
    """Run a session. Ctrl-C (SIGINT) and SIGTERM both stop it the same way: its
    task is cancelled, so the turn in progress is recorded as cut, the models are
    released and the files written. Returns True if SIGTERM stopped it (SIGINT
    raises KeyboardInterrupt, as asyncio.run does)."""
    terminated = False

    async def main() -> None:
        nonlocal terminated
        task = asyncio.current_task()

        def on_term() -> None:
            nonlocal terminated
            terminated = True
            task.cancel()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, on_term)
        loop.add_signal_handler(signal.SIGUSR1, _print_tasks)
        await coro

    try:
        asyncio.run(main())
    except asyncio.CancelledError:
        if not terminated:
            raise
    return terminated


def _print_tasks() -> None:
    """SIGUSR1: every asyncio task, the chain of awaits it is suspended in, and every
    suspended async generator (an ``async for`` hides the chain), on stderr. A session
    that hangs is idle in the event loop, where faulthandler's thread stacks show nothing."""
    import gc
    import inspect

    def chain(awaited) -> None:
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
            if frame is None:
                print(f"    waits for {awaited!r}", file=sys.stderr)
                return
            print(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}",
                  file=sys.stderr)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)

    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=sys.stderr)
        chain(task.get_coro())
    for obj in gc.get_objects():
        if inspect.isasyncgen(obj) and obj.ag_frame is not None and obj.ag_await is not None:
            print("--- a suspended async generator", file=sys.stderr)
            chain(obj)
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
