"""basis use case."""
