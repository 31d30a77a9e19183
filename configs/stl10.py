r"""STL-10 at 32, 8 and 4-bit weights (the papers' sweep), for a GPU machine.

  python experiments/search.py --config=configs/stl10.py --workdir=/tmp/nasq_stl10 \
      --config.data.data_dir=/path/to/tensorflow_datasets

Runs one search per weight bit width into ``workdir/bits32``, ``bits8`` and ``bits4``,
then draws the combined accuracy-vs-size front (``fronts_by_bits.png``). 96x96 images,
a macro space up to 12 layers with channels up to 128, at most 256 KB of weights and 300M
MACs. Hours on one GPU per bit width.
"""

from nasq.runs import search


def get_config():
  config = search.default_config()
  config.space.input_shape = (96, 96, 3)
  config.space.num_classes = 10
  config.space.channels = (16, 24, 32, 48, 64, 96, 128)
  config.sweep_weight_bits = (32, 8, 4)
  config.budget.model_size_bits = 256 * 8 * 1024
  config.budget.macs = 300e6
  config.num_initial = 20
  config.num_evaluations = 80
  config.num_final = 3
  config.data.name = "stl10"
  config.data.source = "tfds"
  config.data.val_size = 1_000
  # final_data follows data (its name left empty): the same data, all of it.
  config.train.epochs = 20
  config.train.progress = False
  config.final_train.epochs = 100
  return config
