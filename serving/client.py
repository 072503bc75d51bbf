"""Send images to a keras-frcnn model in TensorFlow Serving; print and draw the detections.

    python -m serving.client photo.jpg other.png                       # REST, localhost:8501
    python -m serving.client --grpc localhost:8500 photo.jpg           # gRPC
    python -m serving.client --rest http://host:8501 --model frcnn --version 3 --out drawn/ a.jpg

Images go as their file bytes to the ``serving_encoded`` signature (base64 in REST's JSON, a
string tensor in gRPC), so images of different sizes share one request; ``--signature
serving_default`` sends decoded uint8 pixels instead (one request per image). Prints every
detection above ``--min-score`` and, with ``--out``, writes a PNG per image with the boxes drawn.

Runs without keras_frcnn. REST needs only NumPy and Pillow; gRPC needs ``tensorflow-serving-api``
(which brings grpcio and TensorFlow, used for its tensor protos).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import urllib.error
import urllib.request

import numpy as np
from PIL import Image, ImageDraw

ENCODED_SIGNATURE = "serving_encoded"
DEFAULT_SIGNATURE = "serving_default"
INPUT_KEYS = {ENCODED_SIGNATURE: "encoded_image_string_tensor", DEFAULT_SIGNATURE: "input_tensor"}


class ServingError(RuntimeError):
    """The server refused a request; the message is the server's."""


# --- requests -------------------------------------------------------------------------------------


def decode_rgb(data: bytes) -> np.ndarray:
    """uint8 ``[H, W, 3]`` of encoded image bytes (first frame of a GIF), the pixels the model's
    ``serving_encoded`` decodes: a 16-bit greyscale PNG (Pillow's modes "I;16", "I") keeps its
    high byte, as TensorFlow's decoder does (Pillow's own conversion saturates it to white)."""
    with Image.open(io.BytesIO(data)) as image:
        if image.mode.startswith("I"):
            grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB"))


def rest_request_body(images, signature=ENCODED_SIGNATURE) -> dict:
    """The JSON body of a REST predict request for ``images`` (a list of encoded bytes), in
    TF Serving's row ("instances") format; binary strings go as ``{"b64": ...}``."""
    if signature == ENCODED_SIGNATURE:
        instances = [{"b64": base64.b64encode(data).decode("ascii")} for data in images]
    elif signature == DEFAULT_SIGNATURE:
        instances = [decode_rgb(data).tolist() for data in images]
    else:
        raise ValueError(f"unknown signature {signature!r}")
    return {"signature_name": signature, "instances": instances}


def grpc_request(images, model_name, signature=ENCODED_SIGNATURE, version=None):
    """A ``PredictRequest`` proto for ``images`` (a list of encoded bytes)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    if signature == ENCODED_SIGNATURE:
        tensor = tf.make_tensor_proto(list(images), dtype=tf.string, shape=[len(images)])
    elif signature == DEFAULT_SIGNATURE:
        tensor = tf.make_tensor_proto(np.stack([decode_rgb(data) for data in images]))
    else:
        raise ValueError(f"unknown signature {signature!r}")
    request.inputs[INPUT_KEYS[signature]].CopyFrom(tensor)
    return request


# --- responses ------------------------------------------------------------------------------------


def _detections(boxes, scores, classes, names, count):
    n = int(round(float(count)))
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4)[:n],  # normalised yxyx
        "scores": np.asarray(scores, np.float32)[:n],
        "classes": np.asarray(classes, np.float32)[:n].astype(np.int64),  # 1-based
        "class_names": [s.decode() if isinstance(s, bytes) else str(s) for s in list(names)[:n]],
    }


def parse_rest_response(body: dict) -> list:
    """A REST predict response (row or column format) -> one detections dict per image."""
    if "error" in body:
        raise ServingError(body["error"])
    if "predictions" in body:
        rows = body["predictions"]
    elif "outputs" in body:
        outputs = body["outputs"]
        rows = [dict(zip(outputs, values)) for values in zip(*outputs.values())]
    else:
        raise ServingError(f"unexpected response: keys {sorted(body)}")
    return [_detections(r["detection_boxes"], r["detection_scores"], r["detection_classes"],
                        r["detection_class_names"], r["num_detections"]) for r in rows]


def parse_grpc_response(response) -> list:
    """A ``PredictResponse`` proto -> one detections dict per image."""
    import tensorflow as tf

    out = {key: tf.make_ndarray(tensor) for key, tensor in response.outputs.items()}
    return [_detections(*values) for values in zip(
        out["detection_boxes"], out["detection_scores"], out["detection_classes"],
        out["detection_class_names"], out["num_detections"])]


# --- transport ------------------------------------------------------------------------------------


def predict_rest(images, url="http://localhost:8501", model_name="frcnn", version=None,
                 signature=ENCODED_SIGNATURE, timeout=60.0) -> list:
    """POST ``images`` to ``url``'s predict endpoint -> detections per image."""
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version else "") + ":predict"
    body = json.dumps(rest_request_body(images, signature)).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=body,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return parse_rest_response(json.loads(reply.read()))
    except urllib.error.HTTPError as error:
        text = error.read().decode(errors="replace")
        try:
            message = json.loads(text)["error"]
        except (ValueError, KeyError, TypeError):
            message = text
        raise ServingError(f"HTTP {error.code}: {message}") from None


def predict_grpc(images, target="localhost:8500", model_name="frcnn", version=None,
                 signature=ENCODED_SIGNATURE, timeout=60.0) -> list:
    """Send ``images`` over gRPC (``PredictionService/Predict``) -> detections per image."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    # Images are large: lift gRPC's 4 MB default message limit.
    options = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(grpc_request(images, model_name, signature, version), timeout=timeout)
        except grpc.RpcError as error:
            raise ServingError(f"{error.code().name}: {error.details()}") from None
    return parse_grpc_response(response)


# --- output ---------------------------------------------------------------------------------------


def describe(name, detections, min_score) -> str:
    kept = [(n, float(s)) for n, s in zip(detections["class_names"], detections["scores"]) if s >= min_score]
    listed = ", ".join(f"{n} {s:.2f}" for n, s in kept)
    return f"{name}: {len(kept)} detections >= {min_score:g}" + (f": {listed}" if kept else "")


def draw(data: bytes, detections, min_score) -> Image.Image:
    """The image with its detections above ``min_score`` drawn (boxes are normalised)."""
    canvas = Image.fromarray(decode_rgb(data))
    pen = ImageDraw.Draw(canvas)
    width, height = canvas.size
    for box, score, label, name in zip(detections["boxes"], detections["scores"],
                                       detections["classes"], detections["class_names"]):
        if score < min_score:
            continue
        top, left, bottom, right = box * np.array([height, width, height, width])
        colour = tuple(int(c) for c in np.random.default_rng(int(label)).integers(64, 256, 3))
        pen.rectangle([left, top, right, bottom], outline=colour, width=max(1, min(width, height) // 200))
        pen.text((left + 2, max(0.0, top - 12)), f"{name} {score:.2f}", fill=colour)
    return canvas


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serving.client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, GIF)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--rest", default="http://localhost:8501", help="REST base URL (default)")
    where.add_argument("--grpc", help="gRPC host:port, e.g. localhost:8500")
    parser.add_argument("--model", default="frcnn", help="the model's name in TF Serving")
    parser.add_argument("--version", type=int, help="a model version (default: the newest)")
    parser.add_argument("--signature", default=ENCODED_SIGNATURE, choices=sorted(INPUT_KEYS))
    parser.add_argument("--min-score", type=float, default=0.3)
    parser.add_argument("--out", help="write a PNG per image with the detections drawn here")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)

    images = []
    for path in args.images:
        with open(path, "rb") as f:
            images.append(f.read())
    send = predict_grpc if args.grpc else predict_rest
    target = args.grpc or args.rest
    # serving_default takes one image size per request.
    batches = [images] if args.signature == ENCODED_SIGNATURE else [[data] for data in images]
    try:
        results = [d for batch in batches for d in send(batch, target, args.model, args.version,
                                                         args.signature, args.timeout)]
    except (ServingError, OSError) as error:
        print(f"error: {target}: {error}", file=sys.stderr)
        return 1
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    for path, data, detections in zip(args.images, images, results):
        print(describe(path, detections, args.min_score))
        for box, score, name in zip(detections["boxes"], detections["scores"], detections["class_names"]):
            if score >= args.min_score:
                print(f"  {name:20s} {score:.3f}  box (ymin, xmin, ymax, xmax) {np.round(box, 4).tolist()}")
        if args.out:
            target_png = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + ".png")
            draw(data, detections, args.min_score).save(target_png)
            print(f"  -> {target_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
