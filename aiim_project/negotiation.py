"""Content negotiation: a request body without a Content-Type is read as JSON.

The original AIIM (FastAPI) parsed a JSON body whatever its headers said, and scripts written
for it (`curl -X POST --data-raw '{...}'` through a proxy that drops the header, small HTTP
clients) send none. DRF would refuse such a body as an unsupported media type. A body that
does name a type still goes to that type's parser (or is refused as before).
"""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser


class JSONWhenUntyped(DefaultContentNegotiation):
    def select_parser(self, request, parsers):
        if not request.content_type:
            return next((parser for parser in parsers if isinstance(parser, JSONParser)), None)
        return super().select_parser(request, parsers)
