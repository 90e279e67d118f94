"""Container health probe: exit 0 when the service's /ready answers 200, else 1.

Used by the image's HEALTHCHECK and by docker-compose.yml. Standard library only (the image has no
curl); reads the port from JEPA_PORT like the service does, and always asks over loopback.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="healthcheck", description="Exit 0 when the service on 127.0.0.1:$JEPA_PORT answers /ready with 200."
    ).parse_args(argv)
    port = os.environ.get("JEPA_PORT", "8000")
    url = f"http://127.0.0.1:{port}/ready"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
