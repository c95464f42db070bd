"""Analytics and reports for each role, read from rollups and settled data."""
