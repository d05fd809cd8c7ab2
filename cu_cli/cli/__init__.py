"""CLI layer: parsing, printing and exit codes; the only importer of typer and rich. No math."""
