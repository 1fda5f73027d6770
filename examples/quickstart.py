"""The shortest useful fastbp program: fit, evaluate, predict, save, load."""

import numpy as np

import fastbp as fb

rng = np.random.default_rng(0)
X = rng.standard_normal((2000, 2)).astype(np.float32)
y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)          # XOR of the signs: not linearly separable

net = fb.Network([2, 32, 32, 2], activation="tanh", output="softmax", seed=0)
net.fit(X[:1600], y[:1600], epochs=30, batch_size=32, optimizer=fb.Adam(lr=3e-3))
print("test:", net.evaluate(X[1600:], y[1600:]))
print("first predictions:", net.predict(X[1600:1605]), "truth:", y[1600:1605])

net.save("quickstart_model.npz")
again = fb.Network.load("quickstart_model.npz")
assert np.array_equal(again.predict_proba(X), net.predict_proba(X))
