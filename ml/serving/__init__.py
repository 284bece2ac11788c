"""Online inference: the FastAPI app, its model service, the fast path, the prediction log."""
