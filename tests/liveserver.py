"""Moved to ``devtools.liveserver``; this name stays until tests/test_logs.py imports from there."""

from devtools.liveserver import ROOT, LiveServer, free_port

__all__ = ["ROOT", "LiveServer", "free_port"]
