"""Small synthetic studies that show what each correction does to a decision boundary, and a
generated image set with known object boxes.

- ``la_gaussian_study`` (``la_gaussians.py``): the logit-adjustment paper's Figure 2 set-up
  (methods.md §6): 2-D Gaussians, 5% positives, affine classifier; ERM vs. logit-adjusted loss vs.
  post-hoc logit adjustment vs. weight normalisation vs. the Bayes-optimal balanced-error rule.
- ``tde_1d_study`` (``tde_1d.py``): a 1-D two-class illustration of baseline, re-balancing,
  two-stage and TDE (methods.md §3, §4), each seen as a threshold on the line.
- ``placed_digits`` (``placed_digits.py``): digits pasted at known places, for ``explain --boxes``.

Each study returns a results dict and writes ``<name>.md`` (table, with the command that produced
it at the top), ``<name>.png`` and ``<name>.json`` into ``out_dir``. Both run in seconds on 2 CPU
cores: every trial is fitted at once (trials are a batch dimension) by full-batch L-BFGS in
float64 (``common.py``).
"""

from longtail.synthetic.la_gaussians import bayes_balanced_error_2d, la_gaussian_study
from longtail.synthetic.placed_digits import placed_digits
from longtail.synthetic.tde_1d import tde_1d_study

__all__ = ["bayes_balanced_error_2d", "la_gaussian_study", "placed_digits", "tde_1d_study"]
