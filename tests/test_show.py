"""The worked-example printer keeps exactly the gates whose results are used."""

from nram.circuit import CircuitLayout
from training.show import live_gates


def test_live_gates_follow_registers_and_write_back_through_their_inputs():
    layout = CircuitLayout(2, ("read", "zero", "one", "inc", "add", "write"))
    # sources: r0=0, r1=1, read=2, zero=3, one=4, inc=5, add=6, write=7
    gate_inputs = [[0, 0], [0, 0], [0, 0], [2, 0], [4, 5], [3, 1]]  # inc(read), add(one, inc), write(zero, r1)
    assert live_gates(gate_inputs, [6, 1], layout) == {0, 1, 2, 3, 4, 5}  # r0 <- add needs one, inc, read
    assert live_gates(gate_inputs, [0, 1], layout) == {1, 5}  # only write(zero, r1) matters
    assert live_gates(gate_inputs, [5, 0], layout) == {0, 1, 3, 5}  # r0 <- inc(read)
