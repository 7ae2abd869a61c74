"""The generation server: websocket transport, fair job queue and the device worker, kept apart."""
