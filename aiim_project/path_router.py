"""HTTP routing by path prefix, below Django's URLconf (see `aiim_project.wiring`)."""

from __future__ import annotations


class PathRouter:
    """HTTP requests under `prefix` go to `fast`, the others to `default`."""

    def __init__(self, prefix: str, fast, default):
        self.prefix = prefix
        self.fast = fast
        self.default = default

    async def __call__(self, scope, receive, send):
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        app = self.fast if path.startswith(self.prefix) else self.default
        return await app(scope, receive, send)
