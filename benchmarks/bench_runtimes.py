"""One detector in every runtime: TF SavedModel vs ONNX Runtime vs OpenVINO vs LiteRT on the CPU.

The same model exported four ways (export.py's code: ``export_saved_model`` and
``formats.export_runtime_model``), each artifact then run in a fresh Python process of its own
that imports only its runtime (and numpy): load time, median latency over ``--reps`` calls after
two warm-ups at batch 1 and ``--batch`` (4), the process's peak memory (VmHWM), and the detections'
agreement with the SavedModel's (same count; per detection the same class and the box within
1 px). OpenVINO runs twice: f32 (``INFERENCE_PRECISION_HINT``, what ``keras_frcnn.predict`` uses)
and its CPU plugin's default, which is bf16 on CPUs with AVX512_BF16 or AMX. Processes run one
after another, not interleaved: compare within one run.

    python benchmarks/bench_runtimes.py [--model runs/shapes/model.keras] [--reps 5] [--batch 4]

Default model: the VGG-16 ``voc`` preset, random weights, 20 classes, a 600 x 1000 image of
noise (timing and memory; its detections are of noise). With ``--model``, a trained model and
its own test-size images for the agreement.
"""

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

CHILD = r"""
import sys, json, time
runtime, path, images_npz, out_npz, reps, batch = sys.argv[1:7]
reps, batch = int(reps), int(batch)
import numpy as np
def peak_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
t0 = time.perf_counter()
if runtime == "saved_model":
    import tensorflow as tf
    signature = tf.saved_model.load(path).signatures["serving_default"]
    run = lambda x: {k: v.numpy() for k, v in signature(input_tensor=tf.constant(x)).items()}
elif runtime == "onnx":
    import onnxruntime as ort
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    run = lambda x: dict(zip(names, session.run(None, {"input_tensor": x})))
elif runtime.startswith("openvino"):
    import openvino as ov
    config = {"INFERENCE_PRECISION_HINT": "f32"} if runtime == "openvino" else {}
    compiled = ov.Core().compile_model(path, "CPU", config)
    run = lambda x: {o.get_any_name(): v for o, v in compiled(x).items()}
else:
    from ai_edge_litert.interpreter import Interpreter
    import os
    runner = Interpreter(model_path=path, num_threads=os.cpu_count()).get_signature_runner("serving_default")
    run = lambda x: runner(input_tensor=x)
loaded = time.perf_counter() - t0
images = [v for _, v in sorted(np.load(images_npz).items(), key=lambda kv: int(kv[0][1:]))]
report, arrays = {"load_s": loaded}, {}
for i, image in enumerate(images):
    for k, v in run(image[None]).items():
        arrays[f"{i}_{k}"] = np.asarray(v)
for size in sorted({1, batch}):
    x = np.stack([images[0]] * size)
    run(x); run(x)
    times = []
    for _ in range(reps):
        t = time.perf_counter(); run(x); times.append(time.perf_counter() - t)
    report[f"batch{size}_ms"] = 1000 * float(np.median(times))
report["peak_mb"] = peak_mb()
np.savez(out_npz, **arrays)
print(json.dumps(report))
"""

RUNTIMES = ("saved_model", "onnx", "openvino", "openvino-default", "litert")


def agreement(reference, other, images):
    """(detections, the fraction of them with the same class and a box within 1 px), over the
    images; an image whose count differs counts all of its detections as disagreeing."""
    total = same = 0
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        n = int(reference[f"{i}_num_detections"][0])
        total += n
        if int(other[f"{i}_num_detections"][0]) != n:
            continue
        scale = np.array([h, w, h, w])
        boxes_ok = np.abs(reference[f"{i}_detection_boxes"][0, :n] - other[f"{i}_detection_boxes"][0, :n]) * scale
        classes_ok = reference[f"{i}_detection_classes"][0, :n] == other[f"{i}_detection_classes"][0, :n]
        same += int(((boxes_ok.max(-1) <= 1.0) & classes_ok).sum())
    return total, same / max(total, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained .keras model (default: VGG-16 voc, random weights)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--out", help="export folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    from keras_frcnn import build_models, formats, preset
    from keras_frcnn.export import export_saved_model

    out = args.out or tempfile.mkdtemp(prefix="bench_runtimes_")
    os.makedirs(out, exist_ok=True)
    try:
        if args.model:
            from keras_frcnn import cli
            from keras_frcnn.data import shapes

            model = cli.load_model(args.model)
            rng = np.random.default_rng(0)
            images = [np.asarray(shapes.render_example(rng)[0]) for _ in range(8)]
        else:
            cfg = dataclasses.replace(preset("voc"), precision="float32")
            model = build_models(cfg, 20, weights=None).model
            images = [np.random.default_rng(0).integers(0, 256, (600, 1000, 3), dtype=np.uint8)]
        if model.frcnn_config.precision != "float32":
            model = model.with_precision("float32")
        print(machine())
        np.savez(os.path.join(out, "images.npz"), **{f"i{i}": im for i, im in enumerate(images)})
        paths = {}
        for runtime in args.runtimes.split(","):
            fmt = "openvino" if runtime.startswith("openvino") else runtime
            if fmt not in paths:
                started = time.perf_counter()
                if fmt == "saved_model":
                    paths[fmt] = export_saved_model(model, os.path.join(out, "saved_model"), warmup=False)
                    files = [f for f in Path(paths[fmt]).rglob("*") if f.is_file()]
                else:
                    written = formats.export_runtime_model(
                        model, os.path.join(out, f"model{formats.SUFFIXES[fmt]}"), fmt)
                    paths[fmt], files = written[0], [Path(f) for f in written]
                size = sum(f.stat().st_size for f in files)
                print(f"exported {fmt} in {time.perf_counter() - started:.0f} s ({size / 2**20:.0f} MB)", flush=True)
        results, arrays = {}, {}
        for runtime in args.runtimes.split(","):
            fmt = "openvino" if runtime.startswith("openvino") else runtime
            npz = os.path.join(out, f"{runtime}.npz")
            result = subprocess.run([sys.executable, "-c", CHILD, runtime, paths[fmt],
                                     os.path.join(out, "images.npz"), npz, str(args.reps), str(args.batch)],
                                    capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            if result.returncode != 0:
                print(f"{runtime}: failed\n{result.stderr[-2000:]}")
                continue
            results[runtime] = json.loads(result.stdout.strip().splitlines()[-1])
            arrays[runtime] = dict(np.load(npz, allow_pickle=True))
        base = results.get("saved_model", {}).get("batch1_ms")
        print(f"\n{'runtime':18s} {'load s':>7s} {'batch 1 ms':>10s} {'vs TF':>6s} "
              f"{f'batch {args.batch} ms':>11s} {'peak MB':>8s} {'agree':>6s}")
        for runtime, r in results.items():
            total, fraction = agreement(arrays["saved_model"], arrays[runtime], images) \
                if "saved_model" in arrays else (0, float("nan"))
            ratio = r["batch1_ms"] / base if base else float("nan")
            print(f"{runtime:18s} {r['load_s']:7.1f} {r['batch1_ms']:10.0f} {ratio:5.2f}x "
                  f"{r.get(f'batch{args.batch}_ms', float('nan')):11.0f} {r['peak_mb']:8.0f} "
                  f"{fraction:6.1%} of {total}")
    finally:
        if not args.out:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
