"""Monitoring the loop: performance rules, drift of the champion's inputs and outputs, data
quality, and the retraining they trigger (`loopline monitor`, `flows/monitor.py`)."""
