"""The `store` fixture of the serving tests (defined in `tests.ml.serving.fakes`)."""

from tests.ml.serving.fakes import store

__all__ = ["store"]
