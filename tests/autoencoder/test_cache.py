"""The autoencoder cache: reuse, keys, wrong space or version, corrupt entries."""

import dataclasses
import json

import numpy as np
import pytest

from nasq import autoencoder as ae_lib
from nasq.autoencoder import cache as cache_lib
from nasq.spaces import MacroSpace


def test_cache_reuses_retrains_and_rejects(small_ae, tmp_path, monkeypatch):
  space, config = small_ae.space, small_ae.config
  path = ae_lib.cache_path(space, config, tmp_path)
  assert path.name == f"macro-{ae_lib.cache_key(space.config, config)}"
  ae_lib.save(small_ae, path)
  assert (path / "meta.json").exists()

  calls = []
  real_train = cache_lib.train

  def counting_train(*args, **kwargs):
    calls.append(1)
    return real_train(*args, **kwargs)

  monkeypatch.setattr(cache_lib, "train", counting_train)
  loaded = ae_lib.load_or_train(space, config, tmp_path, progress=False)
  assert not calls  # reused
  assert loaded.report["cache_path"] == str(path)
  z = np.random.default_rng(0).normal(size=(50, config.latent_dim))
  np.testing.assert_array_equal(loaded.decode(z), small_ae.decode(z))
  np.testing.assert_allclose(loaded.predict_log_costs(z), small_ae.predict_log_costs(z))
  np.testing.assert_array_equal(loaded.predictor_rmse, small_ae.predictor_rmse)
  # The same weights, the same fingerprint (the comparison's run records key on it).
  assert loaded.fingerprint == small_ae.fingerprint and len(loaded.fingerprint) == 12

  # Another autoencoder config or another space config: another key.
  key = ae_lib.cache_key(space.config, config)
  assert ae_lib.cache_key(space.config, dataclasses.replace(config, seed=1)) != key
  other_space = MacroSpace(dataclasses.replace(space.config, channels=(4, 16)))
  assert ae_lib.cache_key(other_space.config, config) != key

  # Loading an artifact for the wrong space or version is a clear error.
  with pytest.raises(ae_lib.AutoencoderCacheError, match="trained for space"):
    ae_lib.load(path, other_space)
  with pytest.raises(ae_lib.AutoencoderCacheError, match="autoencoder config"):
    ae_lib.load(path, space, dataclasses.replace(config, seed=1))
  meta = json.loads((path / "meta.json").read_text())
  meta["format"] = -1
  (path / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ae_lib.AutoencoderCacheError, match="format"):
    ae_lib.load(path, space)

  # A corrupt entry is retrained, not loaded.
  (path / "meta.json").write_text("{not json")
  short = dataclasses.replace(config, steps=100)
  monkeypatch.setattr(cache_lib, "cache_key", lambda s, c: key)  # same entry
  retrained = ae_lib.load_or_train(space, short, tmp_path, progress=False)
  assert calls == [1]
  assert json.loads((path / "meta.json").read_text())["format"] == ae_lib.FORMAT_VERSION
  assert retrained.decode(z).shape == (50, space.num_positions)
  assert retrained.fingerprint != small_ae.fingerprint


def test_two_loaders_of_one_missing_entry_train_it_once(small_ae, tmp_path, monkeypatch):
  """Two searches starting at once on one cache: one trains and saves, the other waits
  and loads that entry (unlocked, both would train, and one's save would delete the
  other's files mid-write). Synchronized on events, not clocks: the first loader's
  training lasts until the second loader is at the lock (or, without one, training)."""
  import fcntl
  import threading

  space, config = small_ae.space, small_ae.config
  calls = []
  first_training, second_at_lock = threading.Event(), threading.Event()
  threads = []

  def train_until_the_other_waits(*args, **kwargs):
    calls.append(1)
    if len(calls) == 1:
      first_training.set()
      assert second_at_lock.wait(60), "the second loader never reached the lock"
    else:  # only without the lock: let the first one finish
      second_at_lock.set()
    return small_ae

  real_flock = fcntl.flock

  def flock(f, operation):
    second = len(threads) == 2 and threading.current_thread() is threads[1]
    if operation == fcntl.LOCK_EX and second:
      second_at_lock.set()  # the second loader is about to block on the held lock
    return real_flock(f, operation)

  monkeypatch.setattr(cache_lib, "train", train_until_the_other_waits)
  monkeypatch.setattr(fcntl, "flock", flock)
  results, errors = [], []

  def load():
    try:
      results.append(ae_lib.load_or_train(space, config, tmp_path, progress=False))
    except Exception as e:  # surfaced below
      errors.append(e)

  threads.append(threading.Thread(target=load))
  threads[0].start()
  assert first_training.wait(60)
  threads.append(threading.Thread(target=load))
  threads[1].start()
  for t in threads:
    t.join()
  assert not errors
  assert calls == [1]
  z = np.random.default_rng(0).normal(size=(20, config.latent_dim))
  np.testing.assert_array_equal(results[0].decode(z), results[1].decode(z))
  path = ae_lib.cache_path(space, config, tmp_path)
  leftovers = sorted(p.name for p in tmp_path.iterdir())
  assert leftovers == sorted([path.name, path.name + ".lock"])


def test_a_failed_save_leaves_nothing_and_a_killed_ones_leftovers_are_removed(
  small_ae, tmp_path, monkeypatch
):
  space, config = small_ae.space, small_ae.config
  path = ae_lib.cache_path(space, config, tmp_path)

  def broken_write(ae, tmp):
    (tmp / "meta.json").write_text("{}")  # something written, then the failure
    raise OSError("disk full")

  monkeypatch.setattr(cache_lib, "_write", broken_write)
  with pytest.raises(OSError, match="disk full"):
    ae_lib.save(small_ae, path)
  assert list(tmp_path.iterdir()) == []
  monkeypatch.undo()

  # What a killed save leaves (no exception handler ran): removed by the next load.
  stale = tmp_path / f".{path.name}.abc123.tmp"
  (stale / "params").mkdir(parents=True)
  other = tmp_path / ".macro-0000000000000000.abc123.tmp"  # another entry's: kept
  other.mkdir()
  monkeypatch.setattr(cache_lib, "train", lambda *a, **k: small_ae)
  ae_lib.load_or_train(space, config, tmp_path, progress=False)
  names = sorted(p.name for p in tmp_path.iterdir())
  assert names == sorted([path.name, path.name + ".lock", other.name])
