import numpy as np
import pytest
from modAL.uncertainty import _proba_entropy, _proba_margin, _proba_uncertainty

from xal_sklearn import normalized_uncertainty


def test_ranges_and_extremes():
    C = 4
    uniform = np.full((1, C), 1 / C)
    certain = np.eye(C)[:1]
    for method in ("entropy", "margin", "least_confident"):
        assert normalized_uncertainty(uniform, method)[0] == pytest.approx(1.0)
        assert normalized_uncertainty(certain, method)[0] == pytest.approx(0.0)


@pytest.mark.parametrize("method, reference", [
    ("entropy", lambda p: _proba_entropy(p) / np.log(p.shape[1])),
    ("margin", lambda p: 1 - _proba_margin(p)),
    ("least_confident", lambda p: _proba_uncertainty(p) * p.shape[1] / (p.shape[1] - 1)),
])
def test_matches_modal_measures_rescaled(method, reference, rng):
    p = rng.dirichlet(np.ones(5) * 0.7, size=50)
    np.testing.assert_allclose(normalized_uncertainty(p, method), reference(p), atol=1e-12)


def test_unknown_measure():
    with pytest.raises(ValueError, match="Unknown uncertainty 'gini'"):
        normalized_uncertainty(np.eye(3), "gini")
