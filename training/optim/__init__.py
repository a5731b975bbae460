"""Optimizers for NRAM training: torch's SGD and Adam, random-bases descent and its fixed baseline.

- :func:`make_optimizer` (``"sgd"``, ``"adam"``, ``"rbd"``, ``"fpd"``);
- :class:`NativeAdam`: torch's Adam, its CPU update in one C call (``native_adam.py``);
- :class:`DynamoFreeSGD`: torch's SGD without the wrappers that import ``torch._dynamo``
  (``dynamo_free.py``);
- :class:`RandomBasesDescent`, :class:`FixedProjectionDescent` (``random_bases.py``);
- :func:`module_compartments` and the compartment modes (``compartments.py``);
- :func:`directions`, :func:`chunk_seed`, :func:`chunk_grid`: the counter-based chunked
  direction generator (``directions.py``);
- :func:`all_gather_coefficients`: the coefficient exchange of the distributed mode
  (``distributed.py``).
"""

from .compartments import Compartment, module_compartments, resolve_compartments
from .directions import DISTRIBUTIONS, chunk_grid, chunk_seed, directions, fill_directions
from .distributed import all_gather_coefficients, world
from .dynamo_free import DynamoFreeSGD
from .factory import OPTIMIZER_NAMES, OPTIMIZERS, make_optimizer
from .native_adam import NativeAdam
from .random_bases import FixedProjectionDescent, RandomBasesDescent

__all__ = [
    "DISTRIBUTIONS", "OPTIMIZERS", "OPTIMIZER_NAMES", "Compartment", "DynamoFreeSGD", "FixedProjectionDescent",
    "NativeAdam", "RandomBasesDescent", "all_gather_coefficients", "chunk_grid", "chunk_seed", "directions",
    "fill_directions", "make_optimizer", "module_compartments", "resolve_compartments", "world",
]
