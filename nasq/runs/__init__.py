"""The driver floor: the only code that turns an ``ml_collections`` config and a workdir
into files. Each ``experiments/X.py`` calls ``nasq/runs/X.py``, configured by
``configs/X.py``; everything below this package takes typed settings.

* ``search``: run_search, run_sweep (``experiments/search.py``); ``final``: the
  retraining of the best candidates and of a reference network after a search.
* ``compare``: strategies on benchmark tables (``experiments/benchmarks/strategies.py``).
* ``autoencoder``: train and report an autoencoder (``experiments/train_autoencoder.py``).
* ``train``: one architecture (``experiments/train.py``).
"""
