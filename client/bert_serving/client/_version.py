"""The distribution's version, in one place: pyproject.toml reads it, and ``status['client_version']`` reports it."""

__version__ = "1.10.0.post1"
