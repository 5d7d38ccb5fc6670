"""The one frame table: every app's `frames.FRAMES`, merged at start-up."""

from __future__ import annotations

from collections.abc import Mapping

from django.core.exceptions import ImproperlyConfigured

from messaging.frames import FrameSpec


def merge(*tables: tuple[str, Mapping[str, FrameSpec]]) -> dict[str, FrameSpec]:
    """Merge (owner, table) pairs; two apps claiming one frame type is a start-up error,
    never a silent override."""
    merged: dict[str, FrameSpec] = {}
    owners: dict[str, str] = {}
    for owner, table in tables:
        for frame_type, spec in table.items():
            if frame_type in merged:
                raise ImproperlyConfigured(f"frame type {frame_type!r} is defined by both {owners[frame_type]} and {owner}")
            merged[frame_type], owners[frame_type] = spec, owner
    return merged


def build_table() -> dict[str, FrameSpec]:
    import assistants.frames
    import messaging.frames
    import receipts.frames
    import streaming.frames

    return merge(
        ("messaging.frames", messaging.frames.FRAMES),
        ("receipts.frames", receipts.frames.FRAMES),
        ("streaming.frames", streaming.frames.FRAMES),
        ("assistants.frames", assistants.frames.FRAMES),
    )
