"""todo-server: a small, fast, secure REST service for personal task lists."""

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed package's version (pyproject.toml's), or "unknown" when not installed."""
    try:
        return version("todo-server")
    except PackageNotFoundError:
        return "unknown"
