"""WinCLIP's compositional prompt ensemble (CPE): state words x ImageNet-style templates.

Every state word is combined with every template, giving 7 x 21 = 147 normal and
4 x 21 = 84 anomalous prompts per class. The lists are the ones used by anomalib's
``prompting.py`` and by Accurate-WinCLIP (see ``methods.md`` section 2.1); the template
``"a jpeg corrupted photo of the {}."`` really appears twice there and is kept twice here, so
that the averaged text anchors match those implementations.

Example
-------
>>> normal, anomalous = prompt_ensemble("metal_nut")
>>> len(normal), len(anomalous)
(147, 84)
>>> normal[0], anomalous[0]
('a cropped photo of the metal nut.', 'a cropped photo of the damaged metal nut.')
"""

from __future__ import annotations

#: Fallback object word when no class name is known (anomalib's choice).
DEFAULT_OBJECT = "object"

#: Normal state words; ``{}`` is the object word.
NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)

#: Anomalous state words; ``{}`` is the object word.
ANOMALOUS_STATES: tuple[str, ...] = (
    "damaged {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
)

#: Prompt templates; ``{}`` is a state phrase. The duplicate is deliberate (see module doc).
TEMPLATES: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.",
    "a close-up photo of the {}.",
    "a bright photo of a {}.",
    "a bright photo of the {}.",
    "a dark photo of the {}.",
    "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.",
    "a blurry photo of a {}.",
    "a photo of a {}.",
    "a photo of the {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of the {} for visual inspection.",
    "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.",
    "a photo of a {} for anomaly detection.",
)


def clean_class_name(class_name: str | None) -> str:
    """The object word used in prompts: underscores to spaces, whitespace collapsed.

    ``None`` or a blank name gives :data:`DEFAULT_OBJECT` (``"object"``), anomalib's fallback.

    >>> clean_class_name("metal_nut"), clean_class_name("  pipe_fryum "), clean_class_name(None)
    ('metal nut', 'pipe fryum', 'object')
    """
    if class_name is None:
        return DEFAULT_OBJECT
    if not isinstance(class_name, str):
        raise TypeError(f"class_name must be a string such as 'bottle', got {type(class_name).__name__}")
    cleaned = " ".join(class_name.replace("_", " ").split())
    return cleaned or DEFAULT_OBJECT


def compose_prompts(object_word: str, states: tuple[str, ...] | list[str],
                    templates: tuple[str, ...] | list[str] = TEMPLATES) -> list[str]:
    """Every ``template x state`` prompt for one object word, state-major.

    >>> compose_prompts("screw", ["{}", "damaged {}"], ["a photo of a {}."])
    ['a photo of a screw.', 'a photo of a damaged screw.']
    """
    if not states or not templates:
        raise ValueError("states and templates must both be non-empty")
    for s in states:
        if "{}" not in s:
            raise ValueError(f"state {s!r} has no '{{}}' slot for the object word")
    for t in templates:
        if "{}" not in t:
            raise ValueError(f"template {t!r} has no '{{}}' slot for the state phrase")
    return [t.format(s.format(object_word)) for s in states for t in templates]


def prompt_ensemble(class_name: str | None,
                    normal_states: tuple[str, ...] | list[str] = NORMAL_STATES,
                    anomalous_states: tuple[str, ...] | list[str] = ANOMALOUS_STATES,
                    templates: tuple[str, ...] | list[str] = TEMPLATES) -> tuple[list[str], list[str]]:
    """WinCLIP's normal and anomalous prompt lists for a class.

    Parameters
    ----------
    class_name:
        Object category (``"metal_nut"`` becomes ``"metal nut"``); ``None`` falls back to
        ``"object"``.
    normal_states, anomalous_states, templates:
        The lists to combine (defaults: WinCLIP's, see the module doc).

    Returns
    -------
    (normal_prompts, anomalous_prompts), 147 and 84 strings with the defaults.

    >>> n, a = prompt_ensemble(None)
    >>> n[-1]
    'a photo of a object without damage for anomaly detection.'
    """
    word = clean_class_name(class_name)
    return compose_prompts(word, normal_states, templates), compose_prompts(word, anomalous_states, templates)
