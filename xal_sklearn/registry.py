"""The one registry of query strategies by name, read by ``xal run`` and by campaigns.

A name is turned into ``(function, kwargs, estimator_params)``: the strategy (a
plain function with modAL's signature), its keyword arguments, and the parameters
its network needs (BALD's MC dropout). ``xal run --strategies`` and ``xal campaign
init --strategy`` accept exactly :data:`STRATEGY_NAMES`. The names import without torch
(``xal --help`` lists them); the functions are imported when a spec is asked for.
"""

from importlib import import_module

__all__ = ["BALD_DROPOUT", "DUAL_DIVERSITY", "STRATEGY_NAMES", "strategy_spec",
           "strategy_words", "uses_pool_rois"]

#: Ours, then the field's baselines (scikit-activeml's, on the network's features).
STRATEGY_NAMES = ("random", "entropy", "margin", "least_confident", "bald", "badge", "coreset",
                  "typiclust", "probcover", "misalignment", "dual", "dual_kcenter",
                  "dual_cluster")

#: The MC dropout probability the ``bald`` strategy trains with (the others train without).
BALD_DROPOUT = 0.25

#: How each ``dual*`` name spreads its batch (see :func:`~xal_sklearn.strategies.diverse_top_k`).
DUAL_DIVERSITY = {"dual": None, "dual_kcenter": "kcenter", "dual_cluster": "cluster"}

#: name -> (module, function) of each strategy; ``entropy``, ``margin`` and
#: ``least_confident`` are ``uncertainty_sampling`` with that measure.
_FUNCTIONS = {"random": ("strategies", "random_sampling"),
              "misalignment": ("strategies", "misalignment_sampling"),
              **{name: ("strategies", "dual_criterion_sampling") for name in DUAL_DIVERSITY},
              **{name: ("strategies", "uncertainty_sampling")
                 for name in ("entropy", "margin", "least_confident")},
              **{name: ("baselines", f"{name}_sampling")
                 for name in ("bald", "badge", "coreset", "typiclust", "probcover")}}

_WORDS = {"random": "random selection", "entropy": "entropy selection",
          "margin": "margin selection", "least_confident": "least-confidence selection",
          "bald": "BALD (MC dropout)", "badge": "BADGE", "coreset": "core-set selection",
          "typiclust": "TypiClust", "probcover": "ProbCover",
          "misalignment": "misalignment selection"}


def _check_name(name):
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}.")


def strategy_spec(name, alpha=0.3, uncertainty="entropy", alignment="soft_dice"):
    """``(function, kwargs, estimator_params)`` of the strategy called ``name``.

    ``alpha`` is the dual criterion's weight of uncertainty; ``uncertainty`` and
    ``alignment`` the measures the uncertainty and dual strategies use.
    """
    _check_name(name)
    module, function = _FUNCTIONS[name]
    function = getattr(import_module(f"{__package__}.{module}"), function)
    params = {"module__dropout": BALD_DROPOUT} if name == "bald" else {}
    if name in DUAL_DIVERSITY:
        kwargs = {"alpha": alpha, "uncertainty": uncertainty, "alignment": alignment}
        if DUAL_DIVERSITY[name]:
            kwargs["diversity"] = DUAL_DIVERSITY[name]
    elif name == "misalignment":
        kwargs = {"uncertainty": uncertainty, "alignment": alignment}
    elif name in ("entropy", "margin", "least_confident"):
        # rank as modAL's entropy / margin / uncertainty sampling
        kwargs = {"uncertainty": name}
    else:
        kwargs = {}
    return function, kwargs, params


def uses_pool_rois(name):
    """Whether the strategy compares attention with the pool images' ROIs."""
    _check_name(name)
    return name in DUAL_DIVERSITY or name == "misalignment"


def strategy_words(name, setting=""):
    """The strategy in words (``setting``: e.g. "a=0.3" for a dual one)."""
    _check_name(name)
    if name in DUAL_DIVERSITY:
        spread = {"kcenter": " with k-center diversity",
                  "cluster": " with cluster diversity"}.get(DUAL_DIVERSITY[name], "")
        return f"dual-criterion selection{spread}" + (f" ({setting})" if setting else "")
    return _WORDS[name]
