"""Writes the PyTorch fixtures of tests/import.rs (issue 16, item 8: weights from elsewhere).

A small PyTorch MLP (nn.Linear(6, 16) -> ReLU -> nn.Linear(16, 5)), trained for a few
steps so that no param is at its initial value, saved the way PyTorch users save weights:
`safetensors.torch.save_file(model.state_dict(), path)`. Its names are PyTorch's
(`fc1.weight`, ...) and its weights are `[out, in]`, so modelc reads them through
`NameMap::new().pytorch_linear("w1", "b1", "fc1")...`. Written next to it:

- torch_mlp.safetensors           the state dict, F32
- torch_mlp_{f64,f16,bf16}.safetensors   the same cast to F64, F16, BF16
- keras_mlp.safetensors           the same weights under Keras' Dense names and layout
                                  (`dense/kernel` [in, out], `dense/bias`), written with
                                  safetensors' NumPy API (Keras itself is not installed)
- torch_mlp_bad.safetensors       a state dict with one wrong shape, one integer dtype,
                                  one misspelled name and one extra layer
- torch_mlp_outputs.txt           inputs and PyTorch's logits and softmax for them, computed
                                  in float32 with the weights as each file holds them (so the
                                  f16/bf16 rows are the f32 forward of the rounded weights)

Run from the project root with any Python that has torch and safetensors, e.g. the peers'
virtual environment (`../shared/peers/run.sh` creates it at $PEERS_VENV, default
~/.cache/modelc-peers; then `$PEERS_VENV/bin/pip install safetensors` once):

    ~/.cache/modelc-peers/bin/python scripts/make_torch_fixture.py

The output is deterministic for one torch version (seeded); the test compares to ~1e-5, so
a rerun with another version need not match the committed files bit for bit.
"""

import os

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
IN, HIDDEN, CLASSES, ROWS = 6, 16, 5, 4


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(IN, HIDDEN)
        self.fc2 = torch.nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(16)
    model = Mlp()
    # A few steps of SGD on random data, so that the weights are not PyTorch's init.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xs = torch.randn(32, IN)
    ys = torch.randint(0, CLASSES, (32,))
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(OUT, "torch_mlp.safetensors"))
    dtypes = {"f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}
    for name, dt in dtypes.items():
        save_file({k: v.to(dt) for k, v in state.items()}, os.path.join(OUT, f"torch_mlp_{name}.safetensors"))

    keras = {
        "dense/kernel": state["fc1.weight"].T.contiguous().numpy(),
        "dense/bias": state["fc1.bias"].numpy(),
        "dense_1/kernel": state["fc2.weight"].T.contiguous().numpy(),
        "dense_1/bias": state["fc2.bias"].numpy(),
    }
    save_numpy(keras, os.path.join(OUT, "keras_mlp.safetensors"))

    bad = {
        "fc1.weight": torch.zeros(HIDDEN, IN + 1),  # shape: one input too many
        "fc1.bias": torch.zeros(HIDDEN, dtype=torch.int64),  # dtype: an integer tensor
        "fc2.weights": state["fc2.weight"],  # name: misspelled, so fc2.weight is missing
        "fc2.bias": state["fc2.bias"],
        "fc3.weight": torch.zeros(2, CLASSES),  # an extra layer
    }
    save_file(bad, os.path.join(OUT, "torch_mlp_bad.safetensors"))

    torch.manual_seed(7)
    x = torch.randn(ROWS, IN)
    blocks = [("inputs", x)]
    with torch.no_grad():
        for name, dt in [("f32", torch.float32)] + list(dtypes.items()):
            m = Mlp()
            m.load_state_dict({k: v.to(dt).to(torch.float32) for k, v in state.items()})
            logits = m(x)
            blocks.append((f"logits_{name}", logits))
            blocks.append((f"probs_{name}", torch.softmax(logits, dim=1)))
    with open(os.path.join(OUT, "torch_mlp_outputs.txt"), "w") as f:
        f.write(f"# written by scripts/make_torch_fixture.py with torch {torch.__version__}\n")
        f.write("# each block: NAME ROWS COLS, then ROWS lines of float32 values (%.9g: exact)\n")
        for name, t in blocks:
            a = t.numpy().astype(np.float32)
            f.write(f"{name} {a.shape[0]} {a.shape[1]}\n")
            for row in a:
                f.write(" ".join("%.9g" % v for v in row) + "\n")


if __name__ == "__main__":
    main()
