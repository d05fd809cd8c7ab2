"""The on-disk contract: checkpoint format, fingerprints, lineage, key spellings."""
