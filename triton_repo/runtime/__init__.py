"""Logic the python-backend models call: importable and unit-tested without a running server."""
