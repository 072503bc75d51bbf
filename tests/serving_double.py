"""A stand-in for TensorFlow Serving in tests: the exported SavedModel behind the two APIs the
client speaks, over real sockets.

TF Serving itself cannot run on the test machines (no Docker engine, no server binary on PyPI).
This double loads a version folder with ``tf.saved_model.load`` and follows TF Serving's
documented behaviour where the client can see it:

- gRPC ``tensorflow.serving.PredictionService/Predict``: ``PredictRequest`` -> ``PredictResponse``;
  inputs keep the dtype of their ``TensorProto`` (a wrong dtype is the model's InvalidArgument);
  an unknown model or signature is NOT_FOUND, a failed run INVALID_ARGUMENT.
- REST ``POST /v1/models/<name>[/versions/<n>]:predict``: row (``instances``) or columnar
  (``inputs``) JSON, values parsed as the signature's dtype, ``{"b64": ...}`` for binary strings;
  answers ``{"predictions": [...]}`` (row) or ``{"outputs": {...}}`` (columnar) and
  ``{"error": ...}`` with HTTP 400 on failure.
"""

from __future__ import annotations

import base64
import concurrent.futures
import http.server
import json
import os
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class RequestError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code  # a grpc.StatusCode


class ServedModel:
    """The versions of one model's base path, as TF Serving would load them."""

    def __init__(self, name, base_path):
        self.name = name
        versions = sorted(int(v) for v in os.listdir(base_path) if re.fullmatch(r"\d+", v))
        self.versions = {v: tf.saved_model.load(os.path.join(base_path, str(v))) for v in versions}

    def signature(self, name, version=None, signature_name=""):
        if name != self.name:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        version = version or max(self.versions)
        if version not in self.versions:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Servable not found: {name} version {version}")
        signatures = self.versions[version].signatures
        key = signature_name or "serving_default"
        if key not in signatures:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Serving signature name: \"{key}\" not found")
        return signatures[key]

    @staticmethod
    def input_specs(function):
        return function.structured_input_signature[1]

    def run(self, function, inputs):
        specs = self.input_specs(function)
        if set(inputs) != set(specs):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"input keys {sorted(inputs)} do not match the signature's {sorted(specs)}")
        try:
            outputs = function(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()})
        except (tf.errors.OpError, TypeError, ValueError) as error:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, getattr(error, "message", str(error))) from None
        return {k: v.numpy() for k, v in outputs.items()}


# --- gRPC ------------------------------------------------------------------------------------------


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, model):
        self.model = model

    def Predict(self, request, context):  # noqa: N802 (the proto's name)
        try:
            spec = request.model_spec
            function = self.model.signature(spec.name, spec.version.value if spec.HasField("version") else None,
                                            spec.signature_name)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            outputs = self.model.run(function, inputs)
        except RequestError as error:
            context.abort(error.code, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


# --- REST ------------------------------------------------------------------------------------------


def _from_json(value, spec):
    """JSON values of one input (a batch) -> a numpy array of the signature's dtype."""
    if spec.dtype == tf.string:
        def unwrap(v):
            if isinstance(v, list):
                return [unwrap(x) for x in v]
            if isinstance(v, dict):
                return base64.b64decode(v["b64"])
            return v.encode()
        return np.array(unwrap(value), dtype=object)
    array = np.array(value)
    if spec.dtype.is_integer and (array.size and (array.min() < spec.dtype.min or array.max() > spec.dtype.max)):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"values out of range for {spec.dtype.name}")
    return array.astype(spec.dtype.as_numpy_dtype)


def _to_json(array):
    """Numbers as JSON numbers, strings as UTF-8 text (TF Serving base64-encodes only outputs
    whose name ends in ``_bytes``)."""
    def convert(v):
        if isinstance(v, list):
            return [convert(x) for x in v]
        return v.decode("utf-8") if isinstance(v, bytes) else v
    return convert(np.asarray(array).tolist())


def rest_predict(model, name, version, body):
    function = model.signature(name, version, body.get("signature_name", ""))
    specs = model.input_specs(function)
    if "instances" in body:
        instances = body["instances"]
        if len(specs) == 1 and not (instances and isinstance(instances[0], dict) and set(instances[0]) == set(specs)):
            (key,) = specs
            inputs = {key: _from_json(instances, specs[key])}
        else:
            inputs = {k: _from_json([row[k] for row in instances], specs[k]) for k in specs}
        outputs = model.run(function, inputs)
        rows = [{k: _to_json(v[i]) for k, v in outputs.items()} for i in range(len(instances))]
        return {"predictions": rows}
    if "inputs" in body:
        given = body["inputs"]
        if not isinstance(given, dict):
            (key,) = specs
            given = {key: given}
        outputs = model.run(function, {k: _from_json(v, specs[k]) for k, v in given.items() if k in specs})
        return {"outputs": {k: _to_json(v) for k, v in outputs.items()}}
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key")


def _rest_handler(model):
    pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?:predict$")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            match = pattern.match(self.path)
            try:
                if not match:
                    raise RequestError(grpc.StatusCode.NOT_FOUND, f"Malformed request: POST {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                reply, status = rest_predict(model, match[1], int(match[2]) if match[2] else None, body), 200
            except RequestError as error:
                reply, status = {"error": str(error)}, 404 if error.code == grpc.StatusCode.NOT_FOUND else 400
            except ValueError as error:
                reply, status = {"error": f"JSON Parse error: {error}"}, 400
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler


class ServingDouble:
    """Both servers on free localhost ports: ``rest_url`` and ``grpc_target``. Use as a context."""

    def __init__(self, name, base_path):
        self.model = ServedModel(name, base_path)

    def __enter__(self):
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _rest_handler(self.model))
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        self.rest_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(4), options=[
            ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(self.model), self.grpc)
        port = self.grpc.add_insecure_port("127.0.0.1:0")
        self.grpc.start()
        self.grpc_target = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.http.shutdown()
        self.http.server_close()
        self.grpc.stop(None)
