"""Class names in AA-CLIP's prompts: the category's own name, or the released code's descriptions.

AA-CLIP's released code does not put the folder name into its prompts: ``dataset/constants.py``
(``REAL_NAMES``, github.com/Mwxinnn/AA-CLIP at 53db195f; ``methods.md`` 3.2) maps every
category to a short description of what the images show, e.g. MVTec-AD ``pill`` -> "oval white
pill with small red speckles and the letters 'FF' engraved", VisA ``pcb1`` -> "dual ultrasonic
distance sensor pcb module". :data:`DESCRIPTIVE_NAMES` holds that mapping for every data set of
the release: MVTec-AD and VisA (checked against two independent public copies of the file),
MPDD, BTAD (categories ``01``-``03``) and the medical sets (Brain, Liver, Retina: "scan";
the colon sets ClinicDB, ColonDB, Kvasir, CVC-300: "colon endoscopy image"), the strings as
they stand in ``REAL_NAMES`` at that commit. ``mode="plain"`` uses the category name with
underscores as spaces ("metal nut").

Categories are matched by name alone, whatever the data set: a folder data set whose
categories are BTAD's ``01``, ``02``, ``03`` or MPDD's gets their descriptions (use
``"plain"`` for a set that only shares a name). A category the mapping does not know (the
embedded textures, other folder data sets) keeps its plain name in both modes.

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

#: MPDD categories (``REAL_NAMES["MPDD"]`` of the released ``dataset/constants.py``).
MPDD_NAMES: dict[str, str] = {
    "connector": "metal clamps with black adjustment knobs",
    "tubes": "scattered metal objects",
    "metal_plate": "blue rectangular metal plate with a notch on one side",
    "bracket_white": "white, elongated triangular metal bracket with a smooth, matte finish",
    "bracket_brown": "brown L-shaped metal bracket with smooth, glossy finish and multiple mounting holes along its "
                     "arms",
    "bracket_black": "black ornamental metal bracket with spiral design attached to a rectangular frame",
}

#: BTAD categories (``REAL_NAMES["BTAD"]`` of the released ``dataset/constants.py``).
BTAD_NAMES: dict[str, str] = {
    "01": "Bright concentric rings in neon yellow and blue tones against a dark blue background, resembling a "
          "stylized wave or energy field radiating outward.",
    "02": "vertical fabric lines in warm, dusty pink and beige tones",
    "03": "oval concentric circular rings in gradient shades of blue and white",
}

#: Medical sets (``REAL_NAMES`` of Brain, Liver, Retina and the four colon sets), keyed as
#: :func:`prompt_name` looks names up (lower case).
MEDICAL_NAMES: dict[str, str] = {
    "brain": "scan",
    "liver": "scan",
    "retina": "scan",
    "colon_clinicdb": "colon endoscopy image",
    "colon_colondb": "colon endoscopy image",
    "kvasir": "colon endoscopy image",
    "cvc-300": "colon endoscopy image",
}

#: Every released data set's categories (no name is in two tables: MVTec ``capsule``, VisA ``capsules``).
DESCRIPTIVE_NAMES: dict[str, str] = {**MVTEC_NAMES, **VISA_NAMES, **MPDD_NAMES, **BTAD_NAMES, **MEDICAL_NAMES}


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
