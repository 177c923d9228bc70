"""Class names in AA-CLIP's prompts: the category's own name, or the released code's descriptions.

AA-CLIP's released code does not put the folder name into its prompts: ``dataset/constants.py``
(``REAL_NAMES``, github.com/Mwxinnn/AA-CLIP at 53db195f; ``methods.md`` 3.2) maps every
category to a short description of what the images show, e.g. MVTec-AD ``pill`` -> "oval white
pill with small red speckles and the letters 'FF' engraved", VisA ``pcb1`` -> "dual ultrasonic
distance sensor pcb module". :data:`DESCRIPTIVE_NAMES` holds that mapping for MVTec-AD and VisA
(the strings as they stand in the released file, checked against two independent public copies
of it). ``mode="plain"`` uses the category name with underscores as spaces ("metal nut").

A category the mapping does not know (the embedded textures, a folder data set) keeps its plain
name in both modes.

>>> prompt_name("metal_nut", "descriptive")
'metal nut which has four notched edges'
>>> prompt_name("metal nut", "plain"), prompt_name("brick", "descriptive")
('metal nut', 'brick')
"""

from __future__ import annotations

from cfviz.errors import ConfigError

#: ``"descriptive"``: the released code's descriptions (its default); ``"plain"``: the category name.
NAME_MODES = ("descriptive", "plain")

#: MVTec-AD categories (``REAL_NAMES["MVTec"]`` of the released ``dataset/constants.py``).
MVTEC_NAMES: dict[str, str] = {
    "bottle": "dark bottle",
    "cable": "top view of three cables",
    "capsule": "black and orange capsule",
    "carpet": "gray carpet",
    "grid": "metal or plastic mesh",
    "hazelnut": "single brown hazelnut",
    "leather": "brown leather",
    "metal_nut": "metal nut which has four notched edges",
    "pill": "oval white pill with small red speckles and the letters 'FF' engraved",
    "screw": "screw",
    "tile": "speckled tile surface",
    "transistor": "a three-legged transistor placed vertically",
    "toothbrush": "toothbrush head",
    "wood": "wood surface",
    "zipper": "a black zipper",
}

#: VisA categories (``REAL_NAMES["VisA"]`` of the released ``dataset/constants.py``).
VISA_NAMES: dict[str, str] = {
    "candle": "candle",
    "pcb3": "infrared sensor pcb module",
    "capsules": "capsules",
    "pipe_fryum": "pipe-shaped fryum",
    "pcb4": "battery charging pcb module",
    "macaroni2": "scattered yellow macaroni",
    "pcb2": "integrated circuits board",
    "chewinggum": "chewing gum",
    "macaroni1": "orange macaroni",
    "cashew": "cashew nut",
    "fryum": "wheel-shaped fryum snack",
    "pcb1": "dual ultrasonic distance sensor pcb module",
}

#: Both data sets' categories (their names do not overlap: MVTec ``capsule``, VisA ``capsules``).
DESCRIPTIVE_NAMES: dict[str, str] = {**MVTEC_NAMES, **VISA_NAMES}


def check_mode(mode: str, what: str = "class_names") -> str:
    """``mode`` if it is one of :data:`NAME_MODES`, else one :class:`~cfviz.errors.ConfigError`."""
    if mode not in NAME_MODES:
        raise ConfigError(f"{what} must be one of {', '.join(NAME_MODES)} (AA-CLIP's released code uses "
                          f"descriptive names), got {mode!r}")
    return mode


def prompt_name(category: str, mode: str = "descriptive") -> str:
    """The words that stand for ``category`` in AA-CLIP's prompts under ``mode``.

    ``category`` may be given with underscores or spaces, in any case (``"Metal nut"``).
    """
    check_mode(mode)
    if not isinstance(category, str) or not category.strip():
        raise ValueError(f"class name must be a non-empty string such as 'bottle', got {category!r}")
    key = "_".join(category.strip().lower().replace("_", " ").split())
    if mode == "descriptive" and key in DESCRIPTIVE_NAMES:
        return DESCRIPTIVE_NAMES[key]
    return category.replace("_", " ").strip()
