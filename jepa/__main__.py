"""``python -m jepa``: the catalogue of published encoders, and fetching one into the cache.

``python -m jepa models`` prints the catalogue (``--json`` for tools); ``python -m jepa download
SOURCE`` resolves a short name, Hub id (``org/name[@revision]``) or URL into local files and
prints their path: what a Docker build step or a Kubernetes init container runs. Torch-free.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from jepa import catalogue
from jepa.errors import ModelSourceError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jepa", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="list the published encoders (short name, Hub id, URL, figures)")
    models.add_argument("--json", action="store_true", help="one JSON object per encoder")
    download = sub.add_parser("download", help="fetch a model into the cache and print its local path")
    download.add_argument("source", help="short name (python -m jepa models), org/name[@revision], or URL")
    args = p.parse_args(argv)
    if args.command == "models":
        if args.json:
            print(json.dumps([_as_json(e) for e in catalogue.CATALOGUE], indent=2))
        else:
            print(catalogue.format_table())
            print()
            print(catalogue.format_sources())
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    from jepa.hub import resolve

    try:
        resolved = resolve(args.source)
    except ModelSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(resolved.path)
    if resolved.origin:
        print(f"from {resolved.origin}", file=sys.stderr)
    return 0


def _as_json(entry: catalogue.Published) -> dict:
    return {**dataclasses.asdict(entry), "params": entry.params, "params_text": entry.params_text()}


if __name__ == "__main__":
    sys.exit(main())
