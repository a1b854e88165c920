"""Alignment of metrics with human judgement: the correlation and preference statistics the
SR/IQA papers report.

Inputs may be lists, numpy arrays or torch tensors. An undefined statistic (a constant
input) returns NaN with a :class:`ConstantInputWarning` instead of raising. Only the
logistic fit of :func:`plcc` / :func:`rmse` needs scipy (``pip install 'percepfid[eval]'``).

Example:
    >>> from percepfid.eval import srcc, plcc
    >>> srcc([0.1, 0.4, 0.3], [1.0, 3.0, 2.0])
    1.0
"""

from ._inputs import ConstantInputWarning
from .correlation import (
    LogisticFit,
    fit_logistic,
    grouped_correlation,
    krcc,
    plcc,
    rankdata,
    rmse,
    srcc,
)
from .preference import (
    MisalignmentRates,
    misalignment_rates,
    pairwise_accuracy,
    thurstone_case_v,
    win_rate,
)

__all__ = [
    "ConstantInputWarning",
    "LogisticFit",
    "MisalignmentRates",
    "fit_logistic",
    "grouped_correlation",
    "krcc",
    "misalignment_rates",
    "pairwise_accuracy",
    "plcc",
    "rankdata",
    "rmse",
    "srcc",
    "thurstone_case_v",
    "win_rate",
]
