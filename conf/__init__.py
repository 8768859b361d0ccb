"""The config tree, Hydra's config path ``pkg://longrange.conf``. Importing it registers the project's
resolvers (``${around:...}``, ``${not_hashed:...}``), so every composition of these files has them."""

from longrange.experiments.resolvers import register

register()
