"""What WinCLIP and PatchCLIP share: text anchors, window encoding and few-shot memory banks.

Both methods read the same embeddings (:class:`~cfviz.clip.windows.WindowEncoder`), the same
text anchors (:func:`~cfviz.clip.text.text_anchors`) and, in the k-shot setting, the same kind of
memory banks (:class:`~cfviz.memory.MemoryBank`): one bank of patch features and one bank of
window embeddings per scale, built from the k normal reference images given to :meth:`fit`.
They differ only in how scores become maps (see ``winclip.py`` and ``patchclip.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cfviz.clip.fewshot import PATCH_FEATURES, association_scores, memory_banks, patch_features
from cfviz.clip.scores import TEMPERATURE, check_temperature, class_scores
from cfviz.clip.text import text_anchors
from cfviz.clip.windows import DEFAULT_CHUNK, VisualEmbeddings, WindowEncoder, check_choice, check_images
from cfviz.errors import CfvizError

__all__ = ["PATCH_FEATURES", "NotFittedError", "WindowClipModel", "cpu_copy"]  # PATCH_FEATURES: see fewshot.py


class NotFittedError(CfvizError, RuntimeError):
    """A few-shot score was asked for before :meth:`fit` gave reference images."""


class WindowClipModel:
    """Base of :class:`~cfviz.clip.winclip.WinCLIP` and :class:`~cfviz.clip.patchclip.PatchCLIP`.

    Parameters
    ----------
    bundle:
        A :class:`~cfviz.models.bundle.ClipBundle` (``load_clip()``, ``tiny_clip()``, ...).
    class_name:
        Object category used in the prompts (``"metal_nut"`` -> ``"metal nut"``). Required;
        pass ``"object"`` for anomalib's generic fallback. Ignored for the text when
        ``prompts`` is given (it is still recorded).
    scales, stride:
        Window sides and stride in patches.
    temperature:
        Softmax temperature of the text class scores.
    chunk_size:
        Window sequences per transformer call (memory bound; results do not depend on it).
    normalize_prompts:
        Normalise each prompt embedding before averaging (see :mod:`cfviz.clip.text`).
    prompts:
        Optional ``(normal_prompts, anomalous_prompts)`` replacing WinCLIP's ensemble.
    patch_features:
        ``"embeds"`` or ``"tokens"``: what the few-shot patch bank holds (see :data:`PATCH_FEATURES`).
    """

    method = "base"

    def __init__(self, bundle: Any, *, class_name: str | None, scales: Sequence[int] = (2, 3), stride: int = 1,
                 temperature: float = TEMPERATURE, chunk_size: int = DEFAULT_CHUNK, normalize_prompts: bool = True,
                 prompts: tuple[Sequence[str], Sequence[str]] | None = None, patch_features: str = "embeds") -> None:
        if class_name is None and prompts is None:
            raise ValueError(f"{type(self).__name__} needs class_name=..., the object category used in the prompts "
                             "(e.g. class_name='bottle'); pass class_name='object' for the generic fallback")
        if class_name is not None and (not isinstance(class_name, str) or not class_name.strip()):
            raise ValueError(f"class_name must be a non-empty string such as 'bottle', got {class_name!r}")
        check_temperature(temperature)
        self.bundle = bundle
        self.class_name = class_name
        self.encoder = WindowEncoder(bundle, scales=scales, stride=stride, chunk_size=chunk_size)
        self.temperature = float(temperature)
        self.normalize_prompts = bool(normalize_prompts)
        self.prompts = None if prompts is None else (list(prompts[0]), list(prompts[1]))
        self.patch_features = check_choice(patch_features, PATCH_FEATURES, "patch_features")
        self._text: Any = None
        self._banks: dict[Any, Any] = {}
        self.k_shot = 0

    # ------------------------------------------------------------------ settings
    @property
    def scales(self) -> tuple[int, ...]:
        return self.encoder.scales

    @property
    def stride(self) -> int:
        return self.encoder.stride

    @property
    def grid(self) -> tuple[int, int]:
        return self.encoder.grid

    @property
    def boxes(self) -> dict[int, Any]:
        """``scale -> (n, 4)`` window boxes ``[row, col, h, w]``."""
        return dict(self.encoder.boxes)

    def config(self) -> dict[str, Any]:
        """JSON-ready settings and model provenance (e.g. for a capture store's ``config``)."""
        return {"method": self.method, "class_name": self.class_name, "scales": list(self.scales),
                "stride": self.stride, "temperature": self.temperature,
                "normalize_prompts": self.normalize_prompts, "patch_features": self.patch_features,
                "custom_prompts": self.prompts is not None, "model": self.bundle.info()}

    # ------------------------------------------------------------------ text
    @property
    def text(self) -> Any:
        """``(2, D)`` unit text anchors ``[normal, anomalous]`` (encoded once per class and model)."""
        if self._text is None:
            self._text = text_anchors(self.bundle, self.class_name, prompts=self.prompts,
                                      normalize_prompts=self.normalize_prompts)
        return self._text

    def text_scores(self, embeddings: Any) -> Any:
        """Anomalous-class probability of embeddings ``(..., D)`` against the anchors."""
        return class_scores(embeddings, self.text, self.temperature)

    # ------------------------------------------------------------------ images
    def encode(self, images: Any) -> VisualEmbeddings:
        """Image, patch and window embeddings (see :class:`~cfviz.clip.windows.WindowEncoder`)."""
        return self.encoder(images)

    def _patch_bank_features(self, emb: VisualEmbeddings) -> Any:
        return patch_features(emb, self.patch_features)

    def predict(self, images: Any, *, few_shot: bool | None = None) -> Any:
        """Score ``images`` ``(B, 3, S, S)`` (CLIP-normalised): the maps and image score of the batch.

        ``few_shot=None`` adds the few-shot (visual) maps when :meth:`fit` was given references,
        ``False`` leaves them out, ``True`` requires references (:class:`NotFittedError`).
        """
        return self.predict_embeddings(self.encode(images), few_shot=few_shot)

    __call__ = predict

    def predict_embeddings(self, emb: VisualEmbeddings, *, few_shot: bool | None = None) -> Any:
        """Like :meth:`predict`, from embeddings already computed by :meth:`encode`.

        Lets a caller encode a batch once and score it with several models (e.g. the
        evaluation runner runs PatchCLIP and WinCLIP on one set of window embeddings).
        """
        raise NotImplementedError

    def clip_scores(self, images: Any, *, few_shot: bool | None = None) -> list[Any]:
        """One :class:`~cfviz.capture.store.ClipScores` per image (see the result's ``clip_scores``)."""
        return self.predict(images, few_shot=few_shot).clip_scores

    # ------------------------------------------------------------------ few-shot
    def fit(self, reference_images: Any = None, *, batch_size: int = 8) -> WindowClipModel:
        """Build the few-shot memory banks from ``k`` normal reference images ``(k, 3, S, S)``.

        ``None`` clears them (zero-shot). Banks: the patch features of every reference patch
        and, per scale, the embeddings of every reference window. References are encoded
        ``batch_size`` images at a time. Returns ``self``.
        """
        import torch

        if reference_images is None:
            self._banks, self.k_shot = {}, 0
            return self
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        refs = check_images(reference_images, self.bundle, name="reference_images")
        parts: dict[Any, list[Any]] = {"patch": [], **{s: [] for s in self.scales}}
        for i in range(0, refs.shape[0], batch_size):
            emb = self.encode(refs[i:i + batch_size])
            feats = self._patch_bank_features(emb)
            parts["patch"].append(feats.reshape(-1, feats.shape[-1]))
            for s in self.scales:
                parts[s].append(emb.windows[s].reshape(-1, emb.windows[s].shape[-1]))
        windows = {s: torch.cat(parts[s]) for s in self.scales}
        self._banks = memory_banks(torch.cat(parts["patch"]), windows, device=torch.device(self.bundle.device))
        self.k_shot = int(refs.shape[0])
        return self

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` has built the memory banks."""
        return bool(self._banks)

    @property
    def banks(self) -> dict[Any, Any]:
        """``"patch"`` and each scale -> :class:`~cfviz.memory.MemoryBank` (empty before :meth:`fit`)."""
        return dict(self._banks)

    def _require_fit(self, what: str) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__}.{what} needs reference images: call "
                                 f".fit(reference_images) with k normal images of {self.class_name!r} first "
                                 "(or predict with few_shot=False for the zero-shot result)")

    def association_scores(self, emb: VisualEmbeddings) -> tuple[Any, dict[int, Any]]:
        """Visual association scores: patch ``(B, gh, gw)`` and per scale window ``(B, n)``."""
        self._require_fit("association_scores")
        return association_scores(self._banks, self._patch_bank_features(emb),
                                  {s: emb.windows[s] for s in self.scales}, emb.grid)

    def _few_shot_flag(self, few_shot: bool | None, what: str) -> bool:
        if few_shot is None:
            return self.is_fitted
        if few_shot:
            self._require_fit(what)
        return bool(few_shot)

    def __repr__(self) -> str:
        shots = f"{self.k_shot}-shot" if self.is_fitted else "zero-shot"
        return (f"{type(self).__name__}({self.bundle.name}, class_name={self.class_name!r}, scales={self.scales}, "
                f"stride={self.stride}, {shots})")


def cpu_copy(x: Any) -> Any:
    """A detached float32 CPU copy (for :class:`~cfviz.capture.store.ClipScores`)."""
    return x.detach().float().cpu().clone()


class BatchScores:
    """What the batch results of WinCLIP and PatchCLIP share: ``image_score`` ``(B,)``, ``patch_scores``,
    ``window_scores`` and ``boxes``, kept per image as :class:`~cfviz.capture.store.ClipScores`."""

    @property
    def batch_size(self) -> int:
        return int(self.image_score.shape[0])

    def _per_image(self, maps: Any) -> list[Any]:
        """One ClipScores per image (CPU float32 copies), its ``maps`` those of ``maps(i)``."""
        from cfviz.capture.store import ClipScores

        return [ClipScores(image=cpu_copy(self.image_score[i]), patch=cpu_copy(self.patch_scores[i]),
                           windows={s: cpu_copy(v[i]) for s, v in self.window_scores.items()},
                           window_boxes={s: b.detach().cpu().clone() for s, b in self.boxes.items()},
                           maps={k: cpu_copy(v) for k, v in maps(i).items()}) for i in range(self.batch_size)]
