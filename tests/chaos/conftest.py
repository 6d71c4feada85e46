"""The broker-test fixtures (a worker, its topics, a broker of one's own) for the chaos suite."""

from tests.broker.conftest import own_broker, worker_env  # noqa: F401 - fixtures
