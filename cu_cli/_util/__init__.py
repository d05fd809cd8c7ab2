"""Stdlib plumbing: errors with exit codes, atomic files, seeding, logging."""
