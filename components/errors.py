"""Explicit errors, each naming what is wrong and where."""


class EcomrecError(Exception):
    """Base of every error ecomrec raises on purpose."""


class DataContractError(EcomrecError):
    """Input breaks DATA_CONTRACT.md in a way that stops the run (missing column, unreadable table,
    rejected share over the limit). The message names the file or table and the column or reason."""


class NotFittedError(EcomrecError):
    """A model or generator was used before ``fit``."""


class QualityGateError(EcomrecError):
    """The candidate model did not pass the quality gate; nothing was registered."""


class BundleError(EcomrecError):
    """A model bundle is incomplete, corrupt, or fails its checks."""


class RegistryError(EcomrecError):
    """A registry operation is not allowed (unknown version, bad status transition)."""
