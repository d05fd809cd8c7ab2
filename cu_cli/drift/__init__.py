"""``cu drift``: how far each state has moved from the base and from its parent."""
