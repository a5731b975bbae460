"""The worked-example printer: the gates it keeps (those whose results are used) and how it shows a WRITE."""

import torch

from nram.circuit import CircuitLayout
from nram.discrete import DiscreteTrace
from tasks.base import TaskBatch
from training.show import format_trace, live_gates


def test_live_gates_follow_registers_and_write_back_through_their_inputs():
    layout = CircuitLayout(2, ("read", "zero", "one", "inc", "add", "write"))
    # sources: r0=0, r1=1, read=2, zero=3, one=4, inc=5, add=6, write=7
    gate_inputs = [[0, 0], [0, 0], [0, 0], [2, 0], [4, 5], [3, 1]]  # inc(read), add(one, inc), write(zero, r1)
    assert live_gates(gate_inputs, [6, 1], layout) == {0, 1, 2, 3, 4, 5}  # r0 <- add needs one, inc, read
    assert live_gates(gate_inputs, [0, 1], layout) == {1, 5}  # only write(zero, r1) matters
    assert live_gates(gate_inputs, [5, 0], layout) == {0, 1, 3, 5}  # r0 <- inc(read)


def test_a_trace_shows_each_write_as_the_cell_it_sets():
    layout = CircuitLayout(2, ("read", "one", "write"))  # sources: r0, r1, read, one, write
    memory = torch.tensor([[7, 0, 4]])
    written = torch.tensor([[7, 7, 4]])
    trace = DiscreteTrace(memories=torch.stack([memory, written]), registers=torch.tensor([[[0, 0]], [[7, 0]]]),
                          gate_inputs=torch.tensor([[[[0, 0], [0, 0], [3, 2]]]]),  # read(r0), write(one, read)
                          register_sources=torch.tensor([[[2, 1]]]), gate_outputs=torch.tensor([[[7, 1, 0]]]),
                          stop_steps=torch.tensor([1]))
    batch = TaskBatch(memory, target=written, mask=torch.tensor([[False, True, False]]))
    text = format_trace(trace, layout, batch)
    assert "step 1: read(r0)=7  one()=1  write(one, read): cell 1 := 7" in text
    assert "r0<-read=7  r1<-r1=0" in text
    assert "scored cells wrong: 0 of 1" in text
