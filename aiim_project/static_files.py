"""/static/ from the server process: WhiteNoise's middleware (docs/browser.md).

The one change: a missing STATIC_ROOT (DEBUG off and `collectstatic` not run) is reported
through logging, so that it is one JSON line like every other with LOG_FORMAT=json, rather
than a bare Python warning on stderr.
"""

from __future__ import annotations

import logging
import os

from whitenoise.middleware import WhiteNoiseMiddleware

logger = logging.getLogger("aiim.static")


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    def add_files(self, root, prefix=None):
        if not self.autorefresh and not os.path.isdir(root):
            logger.warning("No static files at %s: run `manage.py collectstatic` (docs/browser.md).", root)
            return
        super().add_files(root, prefix)
