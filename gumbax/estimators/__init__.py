"""Gradient estimators for discrete variables behind one contract.

``est = get(name, **hyperparameters)``, ``cv = est.init(key, logits)``,
``surrogate = est(key, logits, f, cv)``: the surrogate's forward value is the loss at
the sample(s) and ``jax.grad`` of its sum is the estimator's gradient, for the
logits and for whatever ``f`` closes over. See ``names()`` for the registry.
"""

from gumbax.estimators._base import Estimator
from gumbax.estimators._base import MeanFieldLoss
from gumbax.estimators._base import get
from gumbax.estimators._base import names
from gumbax.estimators._base import register
from gumbax.estimators.antithetic import Arm
from gumbax.estimators.antithetic import DisArm
from gumbax.estimators.control_variates import Rebar
from gumbax.estimators.control_variates import Relax
from gumbax.estimators.exact import Exact
from gumbax.estimators.indecater import IndeCateR
from gumbax.estimators.pathwise import GumbelRao
from gumbax.estimators.pathwise import Pathwise
from gumbax.estimators.pathwise import ReinMax
from gumbax.estimators.pathwise import Relaxed
from gumbax.estimators.pathwise import StraightThrough
from gumbax.estimators.pathwise import StraightThroughGumbel
from gumbax.estimators.score import MuProp
from gumbax.estimators.score import Reinforce
from gumbax.estimators.score import ReinforceLeaveOneOut
from gumbax.estimators.training import StepGradients
from gumbax.estimators.training import value_and_grads
from gumbax.estimators.without_replacement import SumAndSample
from gumbax.estimators.without_replacement import UnorderedSet

__all__ = [
    "Arm",
    "DisArm",
    "Estimator",
    "Exact",
    "GumbelRao",
    "IndeCateR",
    "MeanFieldLoss",
    "MuProp",
    "Pathwise",
    "Rebar",
    "ReinMax",
    "Reinforce",
    "ReinforceLeaveOneOut",
    "Relax",
    "Relaxed",
    "StepGradients",
    "StraightThrough",
    "StraightThroughGumbel",
    "SumAndSample",
    "UnorderedSet",
    "get",
    "names",
    "register",
    "value_and_grads",
]
