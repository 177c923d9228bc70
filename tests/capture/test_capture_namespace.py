"""``cfviz.capture`` is both the capture function and the package holding the store and helpers."""

import subprocess
import sys


def test_cfviz_capture_is_callable_and_a_namespace_before_any_submodule_import() -> None:
    code = ("import cfviz; c = cfviz.capture; "
            "print(callable(c), c.CaptureStore.__name__, c.locate_cross_attention.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "CaptureStore", "locate_cross_attention"]
