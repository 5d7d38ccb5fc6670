"""Every use of a third-party library's private attributes, one module per library.

docs/internals.md lists each: what it touches, why (with the measured gain), the pinned
version, the test that fails if an upgrade breaks it, and what happens without it. Nothing
outside this package reaches into a library's internals.
"""
