"""Embedded NATS and PostgreSQL from PyPI wheels, for `make up` and the test suite."""
