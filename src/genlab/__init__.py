"""genlab: a generative-modelling toolkit.

    import genlab
    run = genlab.train("vae", data="digits", minutes=1)
    model = genlab.load(run.path)
    images = model.sample(16, cond=3, generator=torch.Generator().manual_seed(0))
    report = genlab.evaluate(run.path)
"""

from genlab.api import evaluate, load, sample, train
from genlab.version import __version__

__all__ = ["__version__", "train", "load", "sample", "evaluate"]
