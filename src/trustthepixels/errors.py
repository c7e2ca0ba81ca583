"""Errors a user can fix. The entry points print them as one short message, without a traceback (see `cli`)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a setting, a path or an input file: the message names it and says how to fix it."""


class ConfigError(UserError, ValueError):
    """A setting with a value that cannot work; raised before any image is read."""
