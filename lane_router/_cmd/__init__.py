"""Subcommands of ``lanes``; see :mod:`lane_router.cli`."""
