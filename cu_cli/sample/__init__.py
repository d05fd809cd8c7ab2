"""sample use case."""
