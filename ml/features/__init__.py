"""Feature store, Python side: feature-set declarations, training sets, the online store."""
