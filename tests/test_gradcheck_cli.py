"""numpygpt gradcheck: every layer passes, every deliberately broken backward fails, and the
command works from outside the checkout."""
import os
import subprocess
import sys

import pytest

from numpygpt.commands import main
from numpygpt.gradcheck import CASES


@pytest.mark.parametrize("layer", list(CASES))
def test_every_layer_passes(layer, capsys):
    assert main(["gradcheck", layer]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


@pytest.mark.parametrize("layer", list(CASES))
def test_every_broken_backward_is_caught(layer, capsys):
    """The broken variant's error is orders of magnitude above the tolerance, and the command
    exits non-zero with a message naming the layer."""
    assert main(["gradcheck", "--break", layer]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "deliberately broken" in captured.out
    assert f"FAILED for {layer}" in captured.err
    error = float(captured.out.split("max relative error ")[1].split()[0])
    assert error > 1e-4


def test_output_is_stable(capsys):
    """Same seed, same text: what the docs show is what a reader gets (no colour off a terminal)."""
    main(["gradcheck", "layernorm"])
    first = capsys.readouterr().out
    main(["gradcheck", "layernorm"])
    assert capsys.readouterr().out == first
    assert "\033[" not in first
    assert "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))" in first


def test_unknown_layer_is_one_clear_error(capsys):
    assert main(["gradcheck", "softmaxx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "numpygpt gradcheck: error: unknown layer 'softmaxx'" in err


def test_breaking_a_layer_that_is_not_checked_is_refused(capsys):
    assert main(["gradcheck", "--break", "gelu", "linear"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--break gelu breaks a layer that is not checked here" in err
    assert main(["gradcheck", "--break", "gelu", "gelu", "linear"]) == 1  # checked, and caught


def test_break_works_from_outside_the_checkout(tmp_path):
    """The broken backward passes live in the package, so an installed copy finds them: run
    from an empty folder with only the package on the path (no tests/ beside it)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-m", "numpygpt", "gradcheck", "--break", "layernorm"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "the mean(dxhat) term is dropped" in result.stdout
