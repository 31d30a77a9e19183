"""Fully Bayesian GP hyperparameters: numpyro NUTS over the priors of ``nasq.gp``.

Following Snoek, Larochelle & Adams (2012), the acquisition is then averaged over the
posterior samples instead of using one point estimate.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS, init_to_median

from nasq import gp

Array = jax.Array


def _model(x: Array, y: Array, mask: Array, *, kernel: str) -> None:
  d = x.shape[1]
  params = gp.GPParams(
    numpyro.sample(
      "log_lengthscale",
      dist.Normal(math.sqrt(2) + 0.5 * math.log(d), 3**0.5).expand([d]).to_event(1),
    ),
    numpyro.sample("log_amplitude", dist.Normal(0.0, 1.0)),
    numpyro.sample("log_noise", dist.Normal(math.log(1e-2), 1.5)),
    numpyro.sample("mean", dist.Normal(0.0, 1.0)),
  )
  numpyro.factor("likelihood", gp.log_marginal_likelihood(kernel, params, x, y, mask))


@functools.lru_cache(maxsize=16)
def _sampler(kernel: str, num_warmup: int, num_samples: int) -> MCMC:
  """One MCMC object per setting, kept: with the data passed as jitted model arguments,
  a later fit on data of the same (padded) shape reuses the compiled sampler instead of
  compiling it again with the data baked in as constants."""
  return MCMC(
    NUTS(functools.partial(_model, kernel=kernel), init_strategy=init_to_median),
    num_warmup=num_warmup,
    num_samples=num_samples,
    progress_bar=False,
    jit_model_args=True,
  )


def fit_nuts(
  kernel: str,
  x: Array,
  y: Array,
  key: jax.Array,
  mask: Array | None = None,
  *,
  num_warmup: int = 200,
  num_samples: int = 200,
  num_kept: int = 16,
) -> gp.GPParams:
  """Posterior samples of the hyperparameters for standardized y.

  Returns ``num_kept`` evenly thinned samples as a ``GPParams`` with a leading axis.
  """
  gp.check_kernel(kernel)
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  mask = jnp.ones(x.shape[0]) if mask is None else mask
  mcmc = _sampler(kernel, int(num_warmup), int(num_samples))
  mcmc.run(key, x, y, jnp.asarray(mask, jnp.float32))
  samples = mcmc.get_samples()
  keep = jnp.linspace(0, num_samples - 1, min(num_kept, num_samples)).astype(jnp.int32)
  return gp.GPParams(
    samples["log_lengthscale"][keep],
    samples["log_amplitude"][keep],
    samples["log_noise"][keep],
    samples["mean"][keep],
  )
