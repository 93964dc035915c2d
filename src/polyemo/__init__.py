"""polyemo: multilingual speech emotion recognition toolkit and benchmark.

Data flows one way, one subpackage per stage:
corpora (recipes) -> manifest -> splits -> audio -> encoders -> cache -> heads/losses/train
-> metrics/report -> bundle -> predict/serve.
"""

__version__ = "0.1.0"


def load(bundle=None, **options):
    """Load a model bundle folder (default: the packaged default model) as a Recogniser.

    ``polyemo.load("my-model").predict("clip.wav")``. Imports torch only when called, so
    ``import polyemo`` stays cheap. Options go to :func:`polyemo.predict.load_model`.
    """
    from polyemo.predict import load_model

    return load_model(bundle, **options)
