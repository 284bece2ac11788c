"""Simulated external sources the data line extracts from."""
