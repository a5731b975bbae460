"""Training diagnostics: edge-of-chaos order parameters and phases, gate adaptation.

- :mod:`training.diagnostics.chaos` (Zhang, Feng et al. 2021): ``order_parameters``,
  ``log_order_parameters``, ``mean_field_fixed_point``, ``mean_field_lhs``, ``phase``,
  ``replica_separation``, ``lyapunov_exponent``, ``j2_slope``, ``recommended_weight_decay``,
  ``plot_phase_diagram``.
- :mod:`training.diagnostics.gates` (Lakshminarayanan & Singh 2020): ``GateAdaptation``.
"""

from training.diagnostics.chaos import (
    PHASES,
    j2_slope,
    log_order_parameters,
    lyapunov_exponent,
    mean_field_fixed_point,
    mean_field_lhs,
    order_parameters,
    phase,
    plot_phase_diagram,
    recommended_weight_decay,
    replica_separation,
)
from training.diagnostics.gates import GateAdaptation

__all__ = [
    "PHASES", "GateAdaptation", "j2_slope", "log_order_parameters", "lyapunov_exponent",
    "mean_field_fixed_point", "mean_field_lhs", "order_parameters", "phase", "plot_phase_diagram",
    "recommended_weight_decay", "replica_separation",
]
