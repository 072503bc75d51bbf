"""TensorFlow Serving kit for exported keras-frcnn models: config files, the docker command and a
REST / gRPC client (``python -m serving.client``). See README.md here."""
