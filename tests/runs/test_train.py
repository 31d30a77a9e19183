"""The one-architecture driver: which architecture a config names."""

import pytest

from configs.train import get_config
from nasq.runs.train import resolve_architecture


def test_resolve_architecture_and_its_errors():
  c = get_config()
  assert resolve_architecture(c).to_string().startswith("conv3:s1:c32")  # fmnist_ref
  c.arch = "conv3:s1:c12"
  with pytest.raises(ValueError, match="outside the space"):
    resolve_architecture(c)
  c.arch = "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"
  arch = resolve_architecture(c)
  assert arch.input_shape == (28, 28, 1)  # from the dataset, not NB201's default
  c.data.name = "svhn"
  with pytest.raises(ValueError, match="data.name must be one of"):
    resolve_architecture(c)
