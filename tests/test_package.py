"""`import genlab` offers train/load/sample/evaluate, and importing the subpackages does not shadow them."""

import genlab
import genlab.kinds.image.evaluate  # noqa: F401  (subpackages must not be named like the API functions)
import genlab.training.trainer  # noqa: F401


def test_api_functions_survive_subpackage_imports():
    for name in ("train", "load", "sample", "evaluate"):
        assert callable(getattr(genlab, name)), f"genlab.{name} is shadowed by a module"
