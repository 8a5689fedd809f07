"""check.spam lives in mailserverd.spam (classifier, token databases, training);
importing this module registers it under its check name (checks/base.py)."""

from ..spam.check import SpamCheck  # noqa: F401  registers check.spam
