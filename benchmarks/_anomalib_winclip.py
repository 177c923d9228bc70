"""anomalib's WinCLIP timed on given CLIP weights and a given input: the external row of bench_latency.py.

Runs in an environment with ``anomalib[clip]`` (not cfviz's: anomalib pins its own open_clip),
started by ``bench_latency.py --anomalib-python PATH``. anomalib's ``WinClipModel`` asks open_clip
for ``laion400m_e31`` weights (a download); here open_clip builds the architecture without
weights and the model then loads the weights file it is given (strict), so both tools run the
same network. Prints one JSON line: wall and thread-CPU seconds of each timed call (after one
untimed warm-up), the warm-up's seconds and the output shapes.

Run (by bench_latency.py):  PYTHON benchmarks/_anomalib_winclip.py WEIGHTS INPUT --calls 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="safetensors file of the open_clip model's state dict")
    parser.add_argument("input", help="safetensors file holding 'image': the (1, 3, 240, 240) CLIP input")
    parser.add_argument("--class-name", default="carpet")
    parser.add_argument("--calls", type=int, default=1, help="timed calls after the warm-up")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import open_clip
    import torch
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    create = open_clip.create_model_and_transforms

    def no_download(name: str, pretrained: str | None = None, **kwargs: object) -> object:
        return create(name, pretrained=None, **kwargs)  # the weights come from args.weights instead

    open_clip.create_model_and_transforms = no_download
    import anomalib
    from anomalib.models.image.winclip.torch_model import WinClipModel

    model = WinClipModel(class_name=None)
    model.clip.load_state_dict(load_file(args.weights), strict=True)
    dtype = getattr(torch, args.dtype)
    model = model.to(dtype).eval()
    batch = load_file(args.input)["image"].to(dtype)
    with torch.inference_mode():
        model.setup(class_name=args.class_name)  # text embeddings of the class (a per-class one-off)
        w = time.perf_counter()
        out = model(batch)
        warm = time.perf_counter() - w
        wall, cpu = [], []
        for _ in range(args.calls):
            w, c = time.perf_counter(), time.thread_time()
            out = model(batch)
            wall.append(time.perf_counter() - w)
            cpu.append(time.thread_time() - c)
    print(json.dumps({"anomalib": anomalib.__version__, "wall": wall, "cpu": cpu, "warm_up": warm,
                      "map": list(out.anomaly_map.shape), "score": list(out.pred_score.shape)}))


if __name__ == "__main__":
    main()
