"""The worker fixtures, for the dependency tests."""

from tests.worker.conftest import start_worker  # noqa: F401 - a fixture
