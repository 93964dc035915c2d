"""polyemo: multilingual speech emotion recognition toolkit and benchmark.

Data flows one way, one subpackage per stage:
corpora (recipes) -> manifest -> splits -> audio -> encoders -> cache -> heads/losses/train
-> metrics/report -> bundle -> predict/serve.
"""

__version__ = "0.1.0"
