"""evaluate use case."""
