"""Files cfviz writes with safetensors metadata are a function of their content, byte for byte.

safetensors writes metadata keys in hash order, which differs from one process to the next: two
identical AA-CLIP trainings gave checkpoints with other SHA-256s, and a store records that SHA-256
(``extraction.aaclip_sha256``), so it refused the second checkpoint's identical adapters.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WRITE = r"""
import sys, torch
from cfviz.utils.io import save_safetensors
meta = {f"key{i}": f"value {i}" for i in range(12)}
save_safetensors(sys.argv[1], {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.float16)}, meta)
"""


def test_equal_content_gives_equal_bytes_in_every_process(tmp_path: Path) -> None:
    from safetensors import safe_open

    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for f in files:  # each process hashes the keys with its own random state
        subprocess.run([sys.executable, "-c", WRITE, str(f)], check=True, timeout=300)
    assert len({f.read_bytes() for f in files}) == 1
    with safe_open(str(files[0]), "pt") as fh:  # still a valid file, metadata and tensors intact
        assert fh.metadata() == {f"key{i}": f"value {i}" for i in range(12)}
        assert fh.get_tensor("b").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
        assert fh.get_tensor("a").dtype.is_floating_point and fh.get_tensor("a").shape == (3,)
    size = int.from_bytes(files[0].read_bytes()[:8], "little")
    assert size % 8 == 0  # the tensor data stays aligned
