"""gumbax: Gumbel noise, relaxed sampling and gradient estimators for discrete variables in JAX."""

from gumbax import diagnostics
from gumbax import estimators
from gumbax import linen
from gumbax import networks
from gumbax import nnx
from gumbax import schedules
from gumbax.densities import bernoulli_entropy
from gumbax.densities import bernoulli_kl
from gumbax.densities import binary_concrete_log_prob
from gumbax.densities import binary_concrete_logit_log_prob
from gumbax.densities import categorical_entropy
from gumbax.densities import categorical_kl
from gumbax.densities import concrete_log_prob
from gumbax.densities import exp_concrete_log_prob
from gumbax.gumbel import conditional_gumbel
from gumbax.gumbel import conditional_logistic
from gumbax.gumbel import gumbel
from gumbax.gumbel import gumbel_cdf
from gumbax.gumbel import gumbel_log_prob
from gumbax.gumbel import gumbel_max
from gumbax.gumbel import gumbel_top_k
from gumbax.relaxed import gumbel_softmax
from gumbax.relaxed import log_gumbel_softmax
from gumbax.relaxed import relaxed_bernoulli
from gumbax.relaxed import relaxed_top_k
from gumbax.relaxed import straight_through

__version__ = "0.1.0"

__all__ = [
    "bernoulli_entropy",
    "bernoulli_kl",
    "binary_concrete_log_prob",
    "binary_concrete_logit_log_prob",
    "categorical_entropy",
    "categorical_kl",
    "concrete_log_prob",
    "conditional_gumbel",
    "conditional_logistic",
    "diagnostics",
    "estimators",
    "exp_concrete_log_prob",
    "gumbel",
    "gumbel_cdf",
    "gumbel_log_prob",
    "gumbel_max",
    "gumbel_softmax",
    "gumbel_top_k",
    "linen",
    "log_gumbel_softmax",
    "networks",
    "nnx",
    "relaxed_bernoulli",
    "relaxed_top_k",
    "schedules",
    "straight_through",
]
