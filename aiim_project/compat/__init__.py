"""Every use of a third-party library's private attributes, one module per library; each is
listed in docs/internals.md (what, why with the measured gain, pin, guarding test).
"""
