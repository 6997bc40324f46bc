"""Run the TDE authors' ``classification/main.py`` on CPU, their code unchanged: only its
environment is adapted. Used for the authors'-code-vs-ours comparison in benchmarks/README.md;
their code is never copied into this repository.

    AUTHORS=/path/to/Long-Tailed-Recognition.pytorch/classification \\
    PICKLES=/path/to/dir/with/cifar-10-batches-py SEED=1 CFG=config/CIFAR10_LT/x.yaml \\
    python drive.py

What is adapted, and why:
- ``.cuda()`` is a no-op (no GPU here); their ``nn.DataParallel`` falls through on CPU.
- ``yaml.load`` gets a Loader (PyYAML 6 requires one).
- torchvision's md5 checks are skipped: ``cifar-10-batches-py`` is written from the JPEG copy
  by ``make_pickle.py``, so its checksums differ from the original's.
- numpy is seeded too: their code seeds ``random`` and torch only, so their long-tailed subset
  (``np.random.shuffle``) was unseeded.
- their hard-coded data root is replaced by ``PICKLES``.
- ``EXTRA_PATH`` (optional) is appended to ``sys.path`` for h5py, which their logger imports.
"""

import os
import sys

import numpy as np
import torch
import torchvision
import yaml
from torch import nn

if os.environ.get("EXTRA_PATH"):
    sys.path.append(os.environ["EXTRA_PATH"])
seed = int(os.environ["SEED"])
np.random.seed(seed)
torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self
_load = yaml.load
yaml.load = lambda f, Loader=yaml.SafeLoader: _load(f, Loader=Loader)
torchvision.datasets.CIFAR10._check_integrity = lambda self: True
torchvision.datasets.cifar.check_integrity = lambda *a, **k: True
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
os.chdir(os.environ["AUTHORS"])
sys.path.insert(0, ".")
if os.environ.get("EVAL_LAST_ONLY"):
    # Their loop evaluates the whole test set after every epoch (to keep the best-on-test
    # epoch); only the last epoch's is compared here, so skip the others (a quarter of the
    # time on CPU). Training is untouched; "best" then is the last epoch.
    import run_networks

    _eval = run_networks.model.eval
    _calls = []

    def _eval_last_only(self, phase="val", save_feat=False):
        if phase == "val":
            _calls.append(1)
            if len(_calls) < self.training_opt["num_epochs"]:
                self.eval_acc_mic_top1 = 0.0
                # The keys their logger's CSV expects (a real evaluation's, zeroed).
                return {f"val_{k}": 0.0 for k in ("all", "many", "median", "low", "fscore")}
        return _eval(self, phase, save_feat)

    run_networks.model.eval = _eval_last_only
source = open("main.py").read().replace("'/data4/CIFAR10'", repr(os.environ["PICKLES"]))
sys.argv = ["main.py", "--cfg", os.environ["CFG"], "--seed", str(seed)]
exec(compile(source, "main.py", "exec"), {"__name__": "__main__"})
