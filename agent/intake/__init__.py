"""Signed documents in: one way in for each type (the dispatch table), their refusals, their defects.

``dispatch.py`` takes every message the session hands over, runs it through the device's verification
and the row of :data:`handlers.TABLE`'s shape for its type (built by the daemon, the composition root),
and says whether it may be acknowledged; ``handlers.py`` holds the rows (what each type writes in its
document's transaction, and what to do once it committed); ``refusals.py`` coalesces a flood of
refusals; ``poison.py`` remembers the payloads that tripped a defect.
"""
