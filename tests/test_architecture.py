"""Imports point down the layers of docs/architecture.md (issue 40, part 5).

Each module of the package sits in one layer; it may import from its own layer and the
ones below, never from a layer above. The package's ``__init__`` (lazy public names) and
the command line are the top.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xal_sklearn"

#: bottom first; the same table as docs/architecture.md
LAYERS = [
    ("helpers", {"_names", "_version", "_validation", "_persist", "_memory", "_pool",
                 "_dataset"}),
    ("data in", {"datasets"}),
    ("model", {"modules", "embedding", "backbones", "pretrain", "finetune", "roi_loss",
               "roi_training", "classifier"}),
    ("explanation", {"gradcam", "alignment", "uncertainty", "roi_model"}),
    ("scoring", {"scoring", "scoring_dask", "_skal"}),
    ("strategies", {"strategies", "baselines", "registry"}),
    ("learner", {"learner"}),
    ("experiments and campaigns", {"experiments", "campaign", "labelstudio"}),
    ("command line", {"cli", "__init__"}),
]
LAYER = {name: k for k, (_, names) in enumerate(LAYERS) for name in names}


def _top(parts):
    """The first component under the package: 'campaign' for xal_sklearn.campaign._batch."""
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path, package_dir=PACKAGE):
    """(top-level module it belongs to, [top-level modules it imports, relative imports])."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    package = parts if path.name == "__init__.py" else parts[:-1]
    if path.name == "__init__.py":
        parts = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            if node.module:
                found.append(_top(base + node.module.split(".")))
            else:
                found += [_top(base + [alias.name]) for alias in node.names]
    return _top(parts), found


def _all_modules():
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    missing = {_imports(p)[0] for p in _all_modules()} - set(LAYER)
    assert not missing, f"add {sorted(missing)} to LAYERS and docs/architecture.md"


@pytest.mark.parametrize("path", _all_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    own, imported = _imports(path)
    up = [m for m in imported if m in LAYER and m != own and LAYER[m] > LAYER[own]]
    assert not up, (f"{path.relative_to(PACKAGE)} ({LAYERS[LAYER[own]][0]}) imports "
                    + ", ".join(f"{m} ({LAYERS[LAYER[m]][0]})" for m in up))


def test_the_registry_imports_strategies_only_when_asked():
    """registry sits with the strategies but names them as strings (the CLI's help reads
    it without torch), so its import_module calls must name modules of its own layer."""
    text = (PACKAGE / "registry.py").read_text()
    for module in ("strategies", "baselines"):
        assert f'("{module}", ' in text and LAYER[module] == LAYER["registry"]


def test_the_checker_sees_an_upward_import(tmp_path):
    """A helper that imports the learner, or a campaign module that imports the command
    line through the package, is caught."""
    root = tmp_path / "xal_sklearn"
    (root / "campaign").mkdir(parents=True)
    (root / "_validation.py").write_text((PACKAGE / "_validation.py").read_text()
                                         + "\nfrom .learner import ActiveLearner\n")
    (root / "campaign" / "_batch.py").write_text("from ..cli import main\n")
    own, imported = _imports(root / "_validation.py", root)
    assert own == "_validation" and "learner" in imported
    assert LAYER["learner"] > LAYER[own]
    own, imported = _imports(root / "campaign" / "_batch.py", root)
    assert own == "campaign" and imported == ["cli"] and LAYER["cli"] > LAYER[own]
