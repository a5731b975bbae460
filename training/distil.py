"""Write a hand program (:mod:`training.programs`) into a feed-forward controller's weights.

The controller sees only the registers' zero flags, so on exact flags a program is a table
from each of the 2^R patterns to one option per choice slot. Distillation fits the controller
to that table by cross-entropy, then scales its read-out so that the chosen option of every
slot leads the runner-up by at least ``margin`` logits: the soft machine then follows the program
closely (at margin 8 the shipped programs run exactly at 4x the training lengths), and
training can start from a known solution to see whether it stays there. A table controller
(:class:`nram.controller.TableController`) holds one column per pattern, so the program is
written into it directly: ``margin`` on each chosen option, 0 elsewhere (so every other option
sits exactly ``margin`` below the chosen one, not far below it as most of an MLP's do, and the
soft machine needs a margin of about 12 to run the ListK program exactly at 4x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nram.controller import MLPController, TableController
from nram.model import NRAM
from training.programs import Program, zero_patterns


def slot_margins(logits: torch.Tensor, table: torch.Tensor, widths: tuple[int, ...]) -> torch.Tensor:
    """Chosen option's logit minus the best other option's, per pattern and slot.

    logits ``[P, num_logits]`` (the stop logit last), table ``LongTensor[P, num_slots]`` ->
    ``[P, num_slots]``; negative where the controller would pick another option.
    """
    margins = []
    for slot, options in enumerate(torch.split(logits[:, :sum(widths)], widths, dim=1)):
        chosen = table[:, slot:slot + 1]
        best_other = options.scatter(1, chosen, float("-inf")).max(dim=1).values
        margins.append(options.gather(1, chosen)[:, 0] - best_other)
    return torch.stack(margins, dim=1)


def distil_program(model: NRAM, program: Program, margin: float = 8.0, iterations: int = 2000,
                   lr: float = 0.01) -> None:
    """Set ``model``'s MLP or table controller to run ``program``: on every pattern of zero flags
    each slot's chosen option leads by at least ``margin`` logits, and the stop logit is
    ``-margin`` (the programs run for all T steps). Raises ``ValueError`` for another
    controller, a margin that is not positive, a program that does not fit the circuit, or a
    table the MLP cannot fit.
    """
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    controller = model.controller
    if not isinstance(controller, (MLPController, TableController)):
        raise ValueError(f"a program is distilled into the plain MLP or the table controller (controller = "
                         f"\"mlp\" or \"table\"), not {type(controller).__name__}")
    layout = model.layout
    parameter = next(controller.parameters())
    table = program.choice_table(layout).to(parameter.device)
    if isinstance(controller, TableController):
        _write_table(controller, table, layout.slot_widths, margin)
        return
    flags = zero_patterns(layout.num_registers).to(parameter.device, parameter.dtype)
    widths = layout.slot_widths
    optimizer = torch.optim.Adam(controller.parameters(), lr=lr)
    for _ in range(iterations):
        logits, _ = controller(flags)
        options = torch.split(logits[:, :sum(widths)], widths, dim=1)
        loss = sum(F.cross_entropy(choice, table[:, slot]) for slot, choice in enumerate(options))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits, _ = controller(flags)
        smallest = slot_margins(logits, table, widths).min()
        if smallest <= 0:
            raise ValueError(f"the controller did not fit the program's table in {iterations} iterations "
                             f"(smallest margin {smallest.item():.3g}); try more iterations or a wider controller")
        weight, bias = controller.readout.weight, controller.readout.bias
        weight.mul_(margin / smallest)
        bias.mul_(margin / smallest)
        weight[-1].zero_()
        bias[-1].fill_(-margin)


@torch.no_grad()
def _write_table(controller: TableController, table: torch.Tensor, widths: tuple[int, ...], margin: float) -> None:
    """Column p of the read-out := ``margin`` on pattern p's chosen options, 0 on the others, and
    ``-margin`` on the stop logit; the bias := 0."""
    columns = [margin * F.one_hot(table[:, slot], width).float() for slot, width in enumerate(widths)]
    stop = torch.full((table.shape[0], 1), -margin)
    controller.readout.weight.copy_(torch.cat([*columns, stop], dim=1).T)
    controller.readout.bias.zero_()
