"""One functional, batched environment API over every backend (see ``core``)."""

from plasticine_jax.envs.registry import make_env, parse_env_id
from plasticine_jax.envs.spaces import Box, Discrete

__all__ = ["Box", "Discrete", "make_env", "parse_env_id"]
