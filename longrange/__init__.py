"""longrange: how far back can a model remember? Synthetic long-range tasks, models and sweeps.

The repository keeps the project's fixed top-level folders (experiments/, models/, datasets/, conf/); this
package links them in (``longrange/models -> ../models``), so ``longrange.models.lstm`` is a plain path on
disk that Python, type checkers and editors resolve without any import hook, and nothing shadows Hugging
Face's ``datasets``.
"""
