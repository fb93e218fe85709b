"""Jobs around the server: the batch job and its store, the asynchronous workers, blue-green and
the rollout controls, the drift check."""
