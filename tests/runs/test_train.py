"""The one-architecture driver: which architecture a config names."""

import pytest

from configs.train import get_config
from nasq.runs.train import resolve_architecture


def test_resolve_architecture_and_its_errors():
  c = get_config()
  shape = (28, 28, 1)
  assert resolve_architecture(c, shape, 10).to_string().startswith("conv3:s1:c32")
  c.arch = "conv3:s1:c12"
  with pytest.raises(ValueError, match="outside the space"):
    resolve_architecture(c, shape, 10)
  c.arch = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  arch = resolve_architecture(c, shape, 10)
  assert arch.input_shape == (28, 28, 1)  # from the dataset, not NB201's default
  c.arch = "conv3:s1:c16 maxpool:s2"
  arch = resolve_architecture(c, (40, 40, 3), 7)  # a user's own data
  assert arch.input_shape == (40, 40, 3) and arch.num_classes == 7
