"""``xal --help`` and argument errors answer without importing torch (issue 39, item 7)."""

import subprocess
import sys

import pytest

import xal_sklearn
from xal_sklearn import _names

HEAVY = ("torch", "sklearn", "skorch", "numpy", "pandas")

_PROBE = """
import sys
from xal_sklearn.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("IMPORTED", sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["campaign", "init", "--help"],
                                  ["run", "--image-size", "0"], ["run", "--alpha", "x"],
                                  ["run", "--strategies", "nope"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    out = subprocess.run([sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)],
                         capture_output=True, text=True, check=True)
    assert "IMPORTED []" in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_names_match_the_registries_that_implement_them():
    from xal_sklearn.alignment import ALIGNMENT_METRICS
    from xal_sklearn.classifier import PRECISIONS
    from xal_sklearn.roi_loss import ROI_DEFAULTS, ROI_LOSSES, check_roi_loss
    from xal_sklearn.uncertainty import UNCERTAINTY_MEASURES, normalized_uncertainty

    assert tuple(ALIGNMENT_METRICS) == _names.ALIGNMENT_NAMES
    assert tuple(PRECISIONS) == _names.PRECISION_NAMES
    assert ROI_LOSSES is _names.ROI_LOSSES and ROI_DEFAULTS is _names.ROI_DEFAULTS
    for name in ROI_LOSSES:
        check_roi_loss(name, 1.0)
    import numpy as np

    for name in UNCERTAINTY_MEASURES:  # every listed measure runs
        assert normalized_uncertainty(np.array([[0.5, 0.5]]), name).shape == (1,)


def test_every_public_name_resolves_lazily():
    for name in xal_sklearn.__all__:
        assert getattr(xal_sklearn, name) is not None
        assert name in dir(xal_sklearn)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        xal_sklearn.nope  # noqa: B018


def test_registry_gives_each_strategy_its_function():
    from xal_sklearn import baselines, strategies
    from xal_sklearn.registry import STRATEGY_NAMES, strategy_spec

    for name in STRATEGY_NAMES:
        function, kwargs, params = strategy_spec(name)
        assert function in (vars(strategies) | vars(baselines)).values()
    assert strategy_spec("margin")[:2] == (strategies.uncertainty_sampling,
                                           {"uncertainty": "margin"})
    assert strategy_spec("bald")[0] is baselines.bald_sampling
    assert strategy_spec("dual_cluster")[1]["diversity"] == "cluster"


def test_gradcam_stays_the_function_after_its_module_is_imported():
    import importlib

    module = importlib.import_module("xal_sklearn.gradcam")
    assert callable(xal_sklearn.gradcam) and xal_sklearn.gradcam is module.gradcam
    from xal_sklearn import gradcam

    assert gradcam is module.gradcam
