#!/usr/bin/env python3
"""Exit 0 if GET <url> answers 200, else 1; print the status and body (or the error).

Usage: healthcheck.py URL [TIMEOUT_SECONDS]. Stdlib only, so the bundle needs nothing but
python3. Proxies are ignored on purpose: the health check always targets this host.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    url = argv[1]
    timeout = float(argv[2]) if len(argv) > 2 else 2.0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            body = response.read(4096).decode("utf-8", "replace")
            print(f"HTTP {response.status} {body}")
            return 0 if response.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"HTTP {exc.code} {exc.read(4096).decode('utf-8', 'replace')}")
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
