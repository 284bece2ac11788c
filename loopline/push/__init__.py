"""On demand (push): landed files and a webhook trigger the line (`watcher`, `webhook`)."""
