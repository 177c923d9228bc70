"""AA-CLIP training: losses fall, checkpoints resume exactly, bad training data fail clearly, CLI."""

from __future__ import annotations

import pytest
import torch

from cfviz.clip.aaclip import AAClip, TrainConfig, TrainingDataError, train_aaclip, training_records
from cfviz.clip.aaclip.checkpoint import CheckpointError, epoch_checkpoints, read_checkpoint
from cfviz.clip.aaclip.data import load_batch
from cfviz.clip.aaclip.train import stage1_loss, stage2_loss

SMALL = dict(shots=2, stage1_epochs=1, stage2_epochs=1, stage1_batch_size=2, stage2_batch_size=2, max_batches=1,
             stage1_lr=1e-3, seed=3)


def _batch(textures, bundle):
    recs = training_records(textures, shots=2, seed=0)
    return load_batch(textures, recs, bundle.image_size)


def test_stage_losses_fall_over_a_few_steps(textures, bundle):
    images, masks, labels, names = _batch(textures, bundle)
    model = AAClip(bundle, seed=0)
    train = TrainConfig(stage1_lr=1e-3)
    opt = torch.optim.Adam(model.adapters.text_parameters(), lr=1e-3, betas=train.betas)
    s1 = []
    for _ in range(4):
        opt.zero_grad()
        loss, _ = stage1_loss(model, images, masks, labels, names, train)
        loss.backward()
        opt.step()
        s1.append(float(loss.detach()))
    assert s1[-1] < s1[0]
    with torch.no_grad():
        anchors = model.anchors(names, cache=False)
    opt = torch.optim.Adam(model.adapters.image_parameters(), lr=5e-4, betas=train.betas)
    s2 = []
    for _ in range(4):
        opt.zero_grad()
        loss, parts = stage2_loss(model, images, masks, labels, anchors)
        loss.backward()
        opt.step()
        s2.append(float(loss.detach()))
    assert s2[-1] < s2[0] and set(parts) == {"seg", "cls"}


def test_training_writes_epoch_checkpoints_and_resumes_exactly(textures, tmp_path):
    from cfviz.models import tiny_clip

    straight = train_aaclip(tiny_clip(seed=0), textures, tmp_path / "a", train=TrainConfig(**{**SMALL,
                            "stage2_epochs": 2}), progress=False)
    assert [p.name for p in straight.checkpoints] == ["stage1_epoch_001.safetensors", "stage2_epoch_001.safetensors",
                                                      "stage2_epoch_002.safetensors"]
    first = train_aaclip(tiny_clip(seed=0), textures, tmp_path / "b", train=TrainConfig(**SMALL), progress=False)
    assert first.epochs_run == 2
    resumed = train_aaclip(tiny_clip(seed=0), textures, tmp_path / "b", train=TrainConfig(**{**SMALL,
                           "stage2_epochs": 2}), progress=False)
    assert resumed.epochs_run == 1 and resumed.resumed_from.name == "stage2_epoch_001.safetensors"
    a, meta = read_checkpoint(straight.final)
    b, _ = read_checkpoint(resumed.final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert '"seed": 3' in meta["train_config"] and meta["seed"] == "3"
    assert len(epoch_checkpoints(tmp_path / "b")) == 3
    # a folder with checkpoints is refused without resume, and with other settings
    with pytest.raises(CheckpointError, match="already holds"):
        train_aaclip(tiny_clip(seed=0), textures, tmp_path / "b", train=TrainConfig(**SMALL), resume=False,
                     progress=False)
    with pytest.raises(CheckpointError, match="stage1_lr"):
        train_aaclip(tiny_clip(seed=0), textures, tmp_path / "b", train=TrainConfig(**{**SMALL, "stage1_lr": 0.1}),
                     progress=False)


def test_training_data_without_anomalies_or_masks_is_refused(textures):
    from cfviz.data.samples import AnomalyDataset

    with pytest.raises(TrainingDataError, match="no anomalous images"):
        training_records(textures.filter(label=0))
    with pytest.raises(TrainingDataError, match="no pixel masks"):
        training_records(AnomalyDataset(textures.records, has_masks=False))
    with pytest.raises(TrainingDataError, match="no 'train' images|no anomalous"):
        training_records(textures, split="train")
    recs = training_records(textures, shots=4, seed=1)
    assert sorted((r.category, r.label) for r in recs) == [("brick", 0)] * 2 + [("brick", 1)] * 2 + \
        [("grass", 0)] * 2 + [("grass", 1)] * 2
    assert recs == training_records(textures, shots=4, seed=1)


def test_cli_trains_and_writes_the_final_adapters(textures, tmp_path, capsys):
    from cfviz.commands.train_aaclip import main

    root = textures.root
    rc = main(["--dataset", "folder", "--root", str(root), "--categories", "brick", "--shots", "2",
               "--stage1-epochs", "1", "--stage2-epochs", "1", "--max-batches", "1", "--out", str(tmp_path / "run"),
               "--no-progress"])
    assert rc == 0
    assert (tmp_path / "run" / "aaclip.safetensors").is_file()
    assert "aaclip.safetensors" in capsys.readouterr().out


def test_notebook_study_keeps_its_files_under_run_dir_aaclip(tmp_path, monkeypatch) -> None:
    """`cfviz run-notebooks --run-dir X` gives every notebook X: 07's checkpoints and data go to X/aaclip,
    never among the capture store of notebooks 01-06."""
    from cfviz.clip.aaclip import compare

    seen: dict[str, object] = {}

    class Stop(Exception):
        pass

    def fake_open_dataset(kind, root, **kwargs):
        seen["data"] = root
        raise Stop

    monkeypatch.setattr("cfviz.data.open_dataset", fake_open_dataset)
    with pytest.raises(Stop):
        compare.study(smoke=True, run_dir=tmp_path)
    assert seen["data"] == tmp_path / "aaclip" / "textures"

    def fake_train(bundle, train_set, out, **kwargs):
        seen["checkpoints"] = out
        raise Stop

    monkeypatch.setattr("cfviz.data.open_dataset", lambda *a, **k: _Split())
    monkeypatch.setattr("cfviz.clip.aaclip.train.train_aaclip", fake_train)
    with pytest.raises(Stop):
        compare.study(smoke=True, run_dir=tmp_path)
    assert seen["checkpoints"] == tmp_path / "aaclip" / "smoke"


class _Split:
    def filter(self, **kwargs):
        return self
