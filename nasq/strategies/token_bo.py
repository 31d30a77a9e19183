"""A GP on one-hot tokens ranking decoded latent candidates and the best architectures'
one-token neighbours (``TokenBO``): the search the project called latent BO until the
latent space was shown to do little of its work."""

from __future__ import annotations

from nasq.strategies.latent_bo import LatentBO


class TokenBO(LatentBO):
  """``LatentBO``'s machinery with a GP on tokens and token neighbours in the pool.

  One step, as the defaults run it:

  1. Fewer than two successful evaluations: a random feasible architecture
     (``token_bo/random``).
  2. A GP (``kernel``, ARD) is fitted to the one-hot tokens of the evaluated
     architectures (252 dimensions on the default macro space) and their objectives'
     copula transform; MAP hyperparameters as ``LatentBO``'s.
  3. The incumbent is the best posterior mean among the feasible evaluated
     architectures; the ``num_anchors`` best by that score are the anchors.
  4. Candidates: ``pool_size`` codes, seven in eight drawn uniformly in a box of side
     ``length`` (unit-cube units, not shaped: the token GP has no length scales over
     the codes; at most 20 coordinates moved per code) around the anchors' codes (half
     around the best), one in eight from the latent prior; every code is decoded.
     Beside them, ``num_neighbours`` (32) one-token mutations of each anchor.
  5. Every candidate is deduplicated, costed exactly, and dropped if evaluated,
     pending, or over the budget.
  6. The rest are ranked by log expected improvement over the incumbent, the GP
     evaluated at each candidate's one-hot tokens; the 16 best are returned.
  7. Nothing new and feasible: the box is widened 2x, then 4x, then the random
     fallback.

  The box follows TuRBO's rules with TuRBO's failure tolerance, max(4, latent
  dimension): 32 for the default autoencoder, so in a search of a few dozen proposals
  it never shrinks. What decides in practice: in the committed 3-seed default-search
  comparison (run when this strategy was called ``latent_bo``), 27 of the 36 proposals
  differ from an evaluated network in 1-2 layers, and each seed's best proposal is one
  of them: the token neighbours, ranked by the GP, do most of the work; the decoder
  serves as a generator of varied candidates. Records' ``origin`` says which
  (``latent_region``, ``prior``, ``neighbour``).
  """

  name = "token_bo"
  DEFAULTS = {"gp_input": "tokens", "num_neighbours": 32, "tr_failure_tol": 0}
