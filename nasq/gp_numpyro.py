"""Fully Bayesian GP hyperparameters: numpyro NUTS over the priors of ``nasq.gp``.

Following Snoek, Larochelle & Adams (2012), the acquisition is then averaged over the
posterior samples instead of using one point estimate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.infer import MCMC, NUTS

from nasq import gp

Array = jax.Array


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
  d = x.shape[1]

  def model():
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

  mcmc = MCMC(
    NUTS(model, init_strategy=numpyro.infer.init_to_median),
    num_warmup=num_warmup,
    num_samples=num_samples,
    progress_bar=False,
  )
  mcmc.run(key)
  samples = mcmc.get_samples()
  keep = jnp.linspace(0, num_samples - 1, min(num_kept, num_samples)).astype(jnp.int32)
  return gp.GPParams(
    samples["log_lengthscale"][keep],
    samples["log_amplitude"][keep],
    samples["log_noise"][keep],
    samples["mean"][keep],
  )
