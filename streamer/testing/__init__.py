"""Test helpers shipped with the package (seeded generators of good and bad input)."""
