"""``cu eval``: sampling a protocol grid, classifying, UA / RA-I / RA-C, pictures."""
