"""Published numbers, shown beside a reproduction run on real MVTec-AD or VisA with real weights.

Sources (see ../shared/reference/methods.md in the project notes):
* WinCLIP zero-shot per class: Jeong et al., CVPR 2023, as tabulated in the ``caoyunkang/WinClip``
  README ("Reported" columns): image AUROC, pixel AUROC, image F1-max, pixel F1-max.
* WinCLIP / WinCLIP+ means from the WinCLIP abstract (classification / segmentation AUROC).
* AA-CLIP (Ma et al., CVPR 2025) means, as quoted by a third-party reproduction report.

CLIPFusion's own per-class numbers are not in the project's reference notes, so no published
CLIPFusion row is shown; add them to :data:`PUBLISHED` when you have them from the paper.
Values are percentages.

Each row names the evaluation ``grid`` its pixel metrics were computed on (:data:`GRIDS`), which
is not cfviz's (256 px, masks nearest-neighbour, or ``--eval-size native``): pixel numbers are
comparable only roughly, and the summary says so next to them.
"""

from __future__ import annotations

from typing import Any

# metric keys follow cfviz.metrics: image_auroc, pixel_auroc, image_f1_max, pixel_f1_max, ...
_WINCLIP_MVTEC_0 = {  # i-AUROC, p-AUROC, i-max-F1, p-max-F1
    "carpet": (100.0, 95.4, 99.4, 49.7), "grid": (98.8, 82.2, 98.2, 18.6), "leather": (100.0, 96.7, 100.0, 39.7),
    "tile": (100.0, 77.6, 99.4, 32.6), "wood": (99.4, 93.4, 98.3, 51.5), "bottle": (99.2, 89.5, 97.6, 58.1),
    "cable": (86.5, 77.0, 84.5, 19.7), "capsule": (72.9, 86.9, 91.4, 21.7), "hazelnut": (93.9, 94.3, 89.7, 37.6),
    "metal_nut": (97.1, 61.0, 96.3, 32.4), "pill": (79.1, 80.0, 91.6, 17.6), "screw": (83.3, 89.6, 87.4, 13.5),
    "toothbrush": (87.5, 86.9, 87.9, 17.1), "transistor": (88.0, 74.7, 79.5, 30.5), "zipper": (91.5, 91.6, 92.9, 34.4),
    "mean": (91.81, 85.12, 92.94, 31.65),
}
_WINCLIP_VISA_0 = {
    "candle": (95.4, 88.9, 89.4, 22.5), "capsules": (85.0, 81.6, 83.9, 9.2), "cashew": (92.1, 84.7, 88.4, 13.2),
    "chewinggum": (96.5, 93.3, 94.8, 41.1), "fryum": (80.3, 88.5, 82.7, 22.1), "macaroni1": (76.2, 70.9, 74.2, 7.0),
    "macaroni2": (63.7, 59.3, 69.8, 1.0), "pcb1": (73.6, 61.2, 71.0, 2.4), "pcb2": (51.2, 71.6, 67.1, 4.7),
    "pcb3": (73.4, 85.3, 71.0, 10.3), "pcb4": (79.6, 94.4, 74.9, 32.0), "pipe_fryum": (69.7, 75.4, 80.7, 12.3),
    "mean": (78.06, 79.59, 78.99, 14.82),
}
_ORDER = ("image_auroc", "pixel_auroc", "image_f1_max", "pixel_f1_max")


#: The grid each source's pixel metrics were computed on, as far as the project's notes say.
GRIDS: dict[str, str] = {
    "winclip": ("240 px CLIP input, maps upsampled bilinearly to it (anomalib's WinCLIP; the paper's own evaluation "
                "size is not in the notes)"),
    "aaclip": "518 x 518 px: masks nearest-neighbour, maps bilinear (AA-CLIP's released test.py)",
}


def _rows(table: dict[str, tuple[float, ...]], dataset: str, method: str, shots: int, source: str) -> list[dict[str, Any]]:
    return [{"dataset": dataset, "method": method, "shots": shots, "category": cat, "metric": m,
             "published": v, "source": source}
            for cat, vals in table.items() for m, v in zip(_ORDER, vals)]


def _mean(dataset: str, method: str, shots: int, metric: str, value: float, source: str) -> dict[str, Any]:
    return {"dataset": dataset, "method": method, "shots": shots, "category": "mean", "metric": metric,
            "published": value, "source": source}


_ABSTRACT, _AA = "WinCLIP (CVPR 2023), abstract", "AA-CLIP (CVPR 2025), {}-trained full-shot"
PUBLISHED: list[dict[str, Any]] = [{**r, "grid": GRIDS[r["method"]]} for r in [
    *_rows(_WINCLIP_MVTEC_0, "mvtec", "winclip", 0, "WinCLIP (CVPR 2023), per-class table"),
    *_rows(_WINCLIP_VISA_0, "visa", "winclip", 0, "WinCLIP (CVPR 2023), per-class table"),
    # abstract: WinCLIP+ 1-normal-shot classification / segmentation AUROC
    _mean("mvtec", "winclip", 1, "image_auroc", 93.1, _ABSTRACT),
    _mean("mvtec", "winclip", 1, "pixel_auroc", 95.2, _ABSTRACT),
    _mean("visa", "winclip", 1, "image_auroc", 83.8, _ABSTRACT),
    _mean("visa", "winclip", 1, "pixel_auroc", 96.4, _ABSTRACT),
    # AA-CLIP full-shot, trained on the other data set (third-party quote of the paper)
    _mean("mvtec", "aaclip", 0, "pixel_auroc", 91.9, _AA.format("VisA")),
    _mean("mvtec", "aaclip", 0, "image_auroc", 90.5, _AA.format("VisA")),
    _mean("visa", "aaclip", 0, "pixel_auroc", 95.5, _AA.format("MVTec")),
    _mean("visa", "aaclip", 0, "image_auroc", 84.6, _AA.format("MVTec")),
]]


def published_frame() -> Any:
    """The published numbers as a tidy DataFrame (dataset, method, shots, category, metric, published, source,
    grid: the evaluation grid of the source's pixel metrics)."""
    import pandas as pd

    return pd.DataFrame(PUBLISHED)
