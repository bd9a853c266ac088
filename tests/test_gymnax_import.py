"""gymnax imports with its renderers' modules (seaborn, matplotlib.pyplot) deferred: they are not loaded until
something reads from them, and then they work as usual (gymnax's own renderers and a user's own imports)."""

import os
import subprocess
import sys

import pytest

CODE = r"""
import sys
from plasticine_jax.envs.gymnax_env import import_gymnax

gymnax = import_gymnax()
heavy = [m for m in ("scipy.stats", "pandas", "matplotlib.figure") if m in sys.modules]
assert not heavy, f"loaded at gymnax import: {heavy}"
assert type(sys.modules["seaborn"]).__name__ == "_Deferred"
assert type(sys.modules["matplotlib.pyplot"]).__name__ == "_Deferred"

import gymnax.environments.misc.pong as pong
palette = pong.sns.color_palette("cubehelix", 3)  # gymnax's Pong renderer: the first read loads seaborn
assert len(palette) == 3 and "scipy.stats" in sys.modules
assert type(pong.sns).__name__ == "module" and pong.sns is sys.modules["seaborn"]  # the same object, now loaded

import matplotlib
assert type(matplotlib.pyplot).__name__ == "_Deferred"  # on its package too, as an import puts it
import matplotlib.pyplot as plt
wrapped = lambda: None
plt.draw_if_interactive = wrapped  # a write before any read (IPython writes to pyplot) loads it, then lands
assert type(plt).__name__ == "module" and sys.modules["matplotlib.pyplot"].draw_if_interactive is wrapped
fig, ax = plt.subplots()
ax.plot([0, 1], [1, 0])
assert matplotlib.pyplot is plt and plt.gcf() is fig

env, params = gymnax.make("CartPole-v1")
print("ok", type(env).__name__)
"""


def test_gymnax_renderer_modules_load_only_when_used():
    env = {**os.environ, "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok CartPole")


def test_a_deferred_module_that_fails_to_load_is_not_left_half_run(tmp_path, monkeypatch):
    from plasticine_jax.envs import gymnax_env

    (tmp_path / "plasticine_broken_renderer.py").write_text("X = 1\nraise RuntimeError('broken install')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plasticine_broken_renderer", raising=False)
    gymnax_env._defer("plasticine_broken_renderer")
    module = sys.modules["plasticine_broken_renderer"]
    assert type(module).__name__ == "_Deferred"
    with pytest.raises(RuntimeError, match="broken install"):
        module.X  # noqa: B018 - the first read runs the module's code
    assert "plasticine_broken_renderer" not in sys.modules  # gone, as after a failed import
