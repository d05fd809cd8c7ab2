"""erase use case."""
