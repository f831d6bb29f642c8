"""End-to-end send-path benchmark: `python -m bench` (see bench/README.md)."""
