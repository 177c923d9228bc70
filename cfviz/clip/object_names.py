"""The object word(s) that stand for a category in every prompt (CLIP's and MapDiff's).

Folder names are not always words: VisA's ``pcb1``, ``chewinggum`` and ``macaroni2`` would go
verbatim into "a close-up cropped png photo of a pcb1 with damage". ``mode="readable"`` (the
default of ``ExtractionConfig.object_names``) gives each MVTec-AD and VisA category a readable
object name (:data:`READABLE_NAMES`); ``mode="folder"`` keeps the folder name, underscores as
spaces (what cfviz did before, and what AnomalyCLIP's released ``dataset.py`` lists in
``generate_class_info``, github.com/zqhang/AnomalyCLIP at ff7ca47; its prompts are object-agnostic,
so the name never reaches them).

Where the readable names come from: the object noun of AA-CLIP's released descriptions
(``REAL_NAMES`` in its ``dataset/constants.py``, kept in :mod:`cfviz.clip.aaclip.names`), without
their adjectives and layout words, so that every method gets one plain object word and no extra
information ("chewing gum", "cashew nut", "macaroni"). Ours: "printed circuit board" for the four
PCB sets (AA-CLIP writes "... pcb module" and "integrated circuits board"; the abbreviation
spelled out) and "pipe fryum" (AA-CLIP: "pipe-shaped fryum"). MVTec-AD's folder names are words
already (``metal_nut`` -> "metal nut"). A category neither table knows (the embedded textures, a
folder data set) keeps its folder name in both modes.

>>> object_name("pcb1"), object_name("chewinggum"), object_name("macaroni2"), object_name("metal_nut")
('printed circuit board', 'chewing gum', 'macaroni', 'metal nut')
>>> object_name("pcb1", "folder"), object_name("brick")
('pcb1', 'brick')
"""

from __future__ import annotations

#: ``"readable"``: :data:`READABLE_NAMES` (default); ``"folder"``: the folder name, underscores as spaces.
OBJECT_NAME_MODES = ("readable", "folder")

#: MVTec-AD: the folder names are words; only the underscore goes.
MVTEC_READABLE: dict[str, str] = {
    "bottle": "bottle", "cable": "cable", "capsule": "capsule", "carpet": "carpet", "grid": "grid",
    "hazelnut": "hazelnut", "leather": "leather", "metal_nut": "metal nut", "pill": "pill", "screw": "screw",
    "tile": "tile", "toothbrush": "toothbrush", "transistor": "transistor", "wood": "wood", "zipper": "zipper",
}

#: VisA: the object noun of AA-CLIP's ``REAL_NAMES["VisA"]``; PCBs spelled out (ours).
VISA_READABLE: dict[str, str] = {
    "candle": "candle", "capsules": "capsules", "cashew": "cashew nut", "chewinggum": "chewing gum",
    "fryum": "fryum", "macaroni1": "macaroni", "macaroni2": "macaroni", "pcb1": "printed circuit board",
    "pcb2": "printed circuit board", "pcb3": "printed circuit board", "pcb4": "printed circuit board",
    "pipe_fryum": "pipe fryum",
}

#: Both data sets (their category names do not overlap: MVTec ``capsule``, VisA ``capsules``).
READABLE_NAMES: dict[str, str] = {**MVTEC_READABLE, **VISA_READABLE}


def folder_name(category: str) -> str:
    """The category's folder name as words: underscores to spaces, whitespace collapsed."""
    return " ".join(str(category).replace("_", " ").split())


def object_name(category: str, mode: str = "readable") -> str:
    """The object word(s) of ``category`` in prompts under ``mode`` (see the module doc).

    Raises ``ValueError`` for a mode other than :data:`OBJECT_NAME_MODES` (configurations check
    it first, naming ``extraction.object_names``).
    """
    if mode not in OBJECT_NAME_MODES:
        raise ValueError(f"object-name mode must be one of {', '.join(OBJECT_NAME_MODES)}, got {mode!r}")
    key = "_".join(str(category).strip().lower().replace("_", " ").split())
    if mode == "readable" and key in READABLE_NAMES:
        return READABLE_NAMES[key]
    return folder_name(category)
