"""python -m numpygpt.gradcheck: every layer passes, every deliberately broken backward fails."""
import pytest

from numpygpt.gradcheck import CASES, main


@pytest.mark.parametrize("layer", list(CASES))
def test_every_layer_passes(layer, capsys):
    assert main([layer]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out


@pytest.mark.parametrize("layer", list(CASES))
def test_every_broken_backward_is_caught(layer, capsys):
    """The broken variant's error is orders of magnitude above the tolerance, and the command
    exits non-zero with a message naming the layer."""
    assert main(["--break", layer]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "deliberately broken" in captured.out
    assert f"FAILED for {layer}" in captured.err
    error = float(captured.out.split("max relative error ")[1].split()[0])
    assert error > 1e-4


def test_output_is_stable(capsys):
    """Same seed, same text: what README shows is what a reader gets (no colour off a terminal)."""
    main(["layernorm"])
    first = capsys.readouterr().out
    main(["layernorm"])
    assert capsys.readouterr().out == first
    assert "\033[" not in first
    assert "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))" in first


def test_unknown_layer_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["softmaxx"])
    assert exit_info.value.code == 2
    assert "unknown layer 'softmaxx'" in capsys.readouterr().err
