"""Neural Random-Access Machines (Kurach, Andrychowicz & Sutskever, ICLR 2016).

The machine: exact fuzzy gates (:mod:`nram.gates`), one soft timestep (:mod:`nram.machine`),
controllers (:mod:`nram.controller`), the unrolled model and its loss (:mod:`nram.model`) and
the discrete machine (:mod:`nram.discrete`).
"""

from nram.discrete import run_discrete
from nram.gates import GATE_NAMES
from nram.model import NRAM, MachineConfig, Rollout, rollout_loss

__all__ = ["GATE_NAMES", "NRAM", "MachineConfig", "Rollout", "rollout_loss", "run_discrete"]
