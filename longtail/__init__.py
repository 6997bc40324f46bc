"""longtail: long-tailed visual recognition (De-confound-TDE, logit adjustment and baselines)."""

__version__ = "0.1.0"
