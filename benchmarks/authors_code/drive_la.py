"""Run the logit-adjustment authors' ``logit_adjustment/main.py`` (google-research, TensorFlow)
on CPU, their code unchanged: only its environment is adapted. Used for the LA authors'-code-vs-
ours comparison in benchmarks/README.md; their code is never copied into this repository.

    AUTHORS=/path/with/logit_adjustment DATA=/path/to/records SEED=1 EPOCHS=62 \\
    python drive_la.py --mode=loss --tb_log_dir=/tmp/la_log

``DATA`` holds what ``make_tfrecord.py`` writes; every argument goes to their ``main.py`` (their
flags). Run it in an environment with tensorflow, tf-keras and absl-py.

What is adapted, and why:
- ``TF_USE_LEGACY_KERAS=1``: their code is Keras 2 (``reset_states``, ``keras.backend.mean``);
  TensorFlow 2.16 and later use Keras 3 unless tf-keras is installed and this is set.
- ``SEED`` seeds TensorFlow, numpy and Python (their code seeds nothing).
- ``EPOCHS=E`` (optional) shortens their CIFAR-10-LT schedule to E epochs with the same shape:
  warm-up and lr steps at the same fractions of the run as their 20, 604, 926 and 1128 of 1241
  epochs, each rounded to a whole epoch (the values are printed). Without it: their 1241 epochs.
- ``EVAL_EVERY=N`` (optional): their loop evaluates the whole test set after every epoch; with
  N, only every N-th epoch and the last are (the others print ``Test accuracy: skipped``, then
  their own line for the empty pass, ``Test accuracy: 0.0000``, which is no measurement).
  Training is untouched.
- ``THREADS`` (default 2) caps TensorFlow's intra- and inter-op threads, like torch's here.
- each epoch's wall-clock time is printed (``epoch E seconds S``) for the speed comparison.
"""

import os
import random
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.abspath(os.environ["AUTHORS"]))
from logit_adjustment import main as their_main  # noqa: E402
from logit_adjustment import utils  # noqa: E402

threads = int(os.environ.get("THREADS", "2"))
tf.config.threading.set_intra_op_parallelism_threads(threads)
tf.config.threading.set_inter_op_parallelism_threads(threads)
seed = int(os.environ["SEED"])
random.seed(seed)
np.random.seed(seed)
tf.random.set_seed(seed)

# Their schedule, as (multiplier, epoch it starts) pairs, and their epoch count.
THEIR_EPOCHS = 1241
THEIR_SCHEDULE = [(1.0, 20), (0.1, 604), (0.01, 926), (0.001, 1128)]

if os.environ.get("EPOCHS"):
    epochs = int(os.environ["EPOCHS"])
    schedule = [(m, max(1, round(e * epochs / THEIR_EPOCHS))) for m, e in THEIR_SCHEDULE]
    mappings = utils.dataset_mappings

    def shortened():
        table = mappings()
        table["cifar10-lt"].num_epochs = epochs
        table["cifar10-lt"].lr_schedule = schedule
        return table

    utils.dataset_mappings = shortened
    print(f"drive_la: {epochs} epochs, schedule (multiplier, from epoch) {schedule}", flush=True)

epoch_start = [time.perf_counter()]
epoch_count = [0]
eval_every = int(os.environ.get("EVAL_EVERY", "1"))
create = utils.create_tf_dataset


class TimedTrain:
    """The training set, printing each epoch's wall-clock time when an epoch's batches end."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        epoch_start[0] = time.perf_counter()
        yield from self.data
        epoch_count[0] += 1
        print(f"epoch {epoch_count[0]} seconds {time.perf_counter() - epoch_start[0]:.1f}",
              flush=True)


class SometimesTest:
    """The test set, empty except every EVAL_EVERY-th epoch and the last."""

    def __init__(self, data, last):
        self.data, self.last = data, last

    def __iter__(self):
        e = epoch_count[0]
        if e % eval_every == 0 or e == self.last:
            yield from self.data
        else:
            print("Test accuracy: skipped", flush=True)


def datasets(dataset, data_home, batch_size, training):
    data = create(dataset, data_home, batch_size, training)
    return TimedTrain(data) if training else SometimesTest(data, dataset.num_epochs)


utils.create_tf_dataset = datasets
sys.argv = ["main.py", f"--data_home={os.path.abspath(os.environ['DATA'])}", *sys.argv[1:]]
their_main.app.run(their_main.main)
