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
- ``EVAL_EVERY=N`` (optional): their loop evaluates the whole test set after every epoch (to
  keep the best-on-test epoch, which is what they report); with N, only every N-th epoch and
  the last are evaluated (a fifth of the time on CPU). Training is untouched.
- their checkpoint is written through a temporary file and a rename, so a copy taken while
  it trains is never half-written; their ``--resume`` loads it on the CPU (they map it to
  ``cuda:0``), and the logs an earlier start wrote are kept (their code reopens them with
  ``'w'``). A resumed run restores the model, optimiser and epoch, not the RNG state (their
  checkpoint has none), so its data order after the resume differs from an uninterrupted run's.
"""

import os
import shutil
import sys
import time

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
if "--resume" in sys.argv:
    # Resolved before the chdir below; their code trains from scratch, with a printed note
    # only, when the file is missing.
    at = sys.argv.index("--resume") + 1
    sys.argv[at] = os.path.abspath(sys.argv[at])
    if not os.path.isfile(sys.argv[at]):
        sys.exit(f"drive_ldam.py: --resume {sys.argv[at]}: no such checkpoint")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for root, _, files in os.walk(work):  # not into the data link
        for f in files:
            if f.startswith("log_") and f.endswith(".csv"):
                os.rename(os.path.join(root, f), os.path.join(root, f"{f[:-4]}.before_{stamp}.csv"))
os.makedirs(work, exist_ok=True)
data_link = os.path.join(work, "data")
if not os.path.exists(data_link):
    os.symlink(os.path.abspath(os.environ["PICKLES"]), data_link)
os.chdir(work)
sys.path.insert(0, authors)
_torch_load = torch.load
torch.load = lambda f, map_location=None, **k: _torch_load(f, map_location="cpu", weights_only=True)

script = os.path.join(authors, "cifar_train.py")
sys.argv = [script, *sys.argv[1:]]
namespace = {"__name__": "cifar_train"}  # defines everything, runs nothing
exec(compile(open(script).read(), script, "exec"), namespace)


def save_checkpoint_atomically(args, state, is_best):
    filename = f"{args.root_model}/{args.store_name}/ckpt.pth.tar"
    torch.save(state, filename + ".tmp")
    os.replace(filename + ".tmp", filename)
    if is_best:
        shutil.copyfile(filename, filename.replace("pth.tar", "best.pth.tar"))


namespace["save_checkpoint"] = save_checkpoint_atomically
every = int(os.environ.get("EVAL_EVERY", "1"))
_validate = namespace["validate"]


def validate_every(val_loader, model, criterion, epoch, args, *rest, **kw):
    if (epoch + 1) % every and epoch + 1 != args.epochs:
        return 0.0  # not evaluated: never the best
    return _validate(val_loader, model, criterion, epoch, args, *rest, **kw)


namespace["validate"] = validate_every
namespace["main"]()
