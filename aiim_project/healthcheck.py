"""Container HEALTHCHECK: exit 0 when GET /health/live on $PORT answers 200 (stdlib only,
so it starts fast and needs no Django set-up)."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8083')}/health/live"
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
