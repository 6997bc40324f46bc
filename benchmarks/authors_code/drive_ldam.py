"""Run the LDAM-DRW authors' ``cifar_train.py`` (kaidic/LDAM-DRW) on CPU, their code unchanged:
only its environment is adapted. Used for the LDAM-DRW authors'-code-vs-ours comparison in
benchmarks/README.md; their code is never copied into this repository.

    AUTHORS=/path/to/LDAM-DRW PICKLES=/path/to/dir/with/cifar-10-batches-py WORK=/path/to/workdir \\
    python drive_ldam.py --loss_type LDAM --train_rule DRW --seed 1 --rand_number 1 -j 0

Every argument after the script's name goes to their ``cifar_train.py`` as it is.

What is adapted, and why:
- ``.cuda()`` is a no-op and ``torch.cuda.FloatTensor`` is the CPU one (no GPU here); their
  ``nn.DataParallel`` falls through on CPU.
- torchvision's md5 checks are skipped, so ``download=True`` reads the local files:
  ``cifar-10-batches-py`` is written from the JPEG copy by ``make_pickle.py``, so its
  checksums differ from the original's.
- their hard-coded data root ``./data`` is a link, in ``WORK``, to ``PICKLES``; their logs and
  checkpoints go under ``WORK`` too.
- ``EXTRA_PATH`` (optional) is appended to ``sys.path`` for tensorboardX, which they import.
"""

import os
import sys

import torch
import torchvision
from torch import nn

if os.environ.get("EXTRA_PATH"):
    sys.path.append(os.environ["EXTRA_PATH"])
torch.Tensor.cuda = lambda self, *a, **k: self
nn.Module.cuda = lambda self, *a, **k: self
torch.cuda.FloatTensor = torch.FloatTensor  # their LDAMLoss builds its margins as one
torchvision.datasets.CIFAR10._check_integrity = lambda self: True
torchvision.datasets.cifar.check_integrity = lambda *a, **k: True
torch.set_num_threads(int(os.environ.get("THREADS", "2")))

authors = os.path.abspath(os.environ["AUTHORS"])
work = os.path.abspath(os.environ["WORK"])
os.makedirs(work, exist_ok=True)
data_link = os.path.join(work, "data")
if not os.path.exists(data_link):
    os.symlink(os.path.abspath(os.environ["PICKLES"]), data_link)
os.chdir(work)
sys.path.insert(0, authors)
script = os.path.join(authors, "cifar_train.py")
sys.argv = [script, *sys.argv[1:]]
exec(compile(open(script).read(), script, "exec"), {"__name__": "__main__"})
