"""The streaming line: viewing events from a stream, landed as immutable micro-batch files.

`loopline produce` publishes the simulator's viewing events to a stream (`producer.py`);
`loopline stream` consumes them (`consumer.py`): it reads a source (`sources.py`: a Redis
stream with a consumer group, or the embedded NDJSON spool), groups events into
micro-batches bounded by count and age (`batcher.py`), lands each as one immutable NDJSON
file where the file ingest picks events up (`sink.py`), acknowledges the events only after
the file is durably written, updates the streaming features in the online store
(`features.py`) and reports lag and throughput (`<data_dir>/stream/metrics.json`).
"""
