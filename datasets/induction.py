"""Induction heads: "... A B ... A" -> "B": at the second trigger, produce what followed the first.

The pattern of Olsson et al. (2022): a trigger token A followed by a target B appears once in a sequence
of random symbols; when A appears again (the *answer position*), the model must produce B. ``trigger``
picks the kind of A:

* ``random`` (default): A is a random symbol of the alphabet that occurs nowhere else, so the model must
  notice that the current symbol occurred before and copy its successor (the two-step circuit of an
  induction head). A recurrent model cannot know which symbol will be repeated: it has to remember the
  successor of every symbol it has seen.
* ``special``: A is the dedicated token ``@``, the same in every sample (the variant of the Mamba paper):
  the model only needs to remember the symbol after ``@``.

Distance ``D`` is the exact number of tokens strictly between the target B and the second trigger. The
``jitter`` knob adds that many random symbols around the pattern, split at random between before the
first trigger and after the second, so the pattern's position varies between samples. Layout
(L = D + jitter + 4, o uniform in [0, jitter])::

    <bos> | o symbols | A B | D symbols | A | jitter - o symbols        answer position = second A, target B

Worked examples (``distance=6, num_symbols=8, jitter=4``, decoded with ``task.vocab.decode`` from
``task.sample(1, 6, torch.Generator().manual_seed(0))``)::

    trigger=random:   <bos> s0 s4 s1 s2 s7 s3 s5 s6 s2 s4 s1 s6 s2    -> s1 (at the second s4, position 10)
    trigger=special:  <bos> s7 s5 s0 @ s3 s3 s7 s1 s3 s5 s2 @ s7      -> s3 (at the second @, position 12)

In the first example the target ``s1`` sits at position 3 and the second ``s4`` at 10: 6 tokens lie
between them; ``s4`` occurs nowhere else (``s2`` repeating is filler, not a question). Chance level is
1 / (num_symbols - 1) with a random trigger (B is never A) and 1 / num_symbols with the special one.
"""

from __future__ import annotations

from typing import Literal

import torch

from longrange.datasets.base import SyntheticTask, TaskBatch, Vocabulary, check_int

SPECIALS = ("<pad>", "<bos>")
TRIGGER = "@"
TRIGGERS = ("random", "special")


class InductionHeads(SyntheticTask):
    """At the second occurrence of the trigger, produce the symbol that followed its first occurrence.

    Args:
        distance: D, tokens strictly between the target and the second trigger; an int or a list.
        eval_distance: distances for validation/test (default: ``distance``).
        num_symbols: alphabet size (3..1024).
        trigger: "random" (a symbol that occurs only twice) or "special" (the dedicated token ``@``).
        jitter: random symbols around the pattern, so that its position varies (0..4096).
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        num_symbols: int = 16,
        trigger: Literal["random", "special"] = "random",
        jitter: int = 8,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.num_symbols = check_int("data.num_symbols", num_symbols, 3, 1024)
        if trigger not in TRIGGERS:
            raise ValueError(f"data.trigger={trigger!r}; allowed: {', '.join(TRIGGERS)}")
        self.trigger = trigger
        self.jitter = check_int("data.jitter", jitter, 0, 4096)
        symbols = [f"s{i}" for i in range(num_symbols)]
        self.vocab = Vocabulary(SPECIALS, symbols, [TRIGGER] if trigger == "special" else [])
        self.symbol_ids = self.vocab.ids(symbols)
        # Distinct samples: the trigger (random), the target and every filler symbol, and the offset o.
        smallest = min(self.train_distances + self.eval_distances)
        choices = num_symbols - 1 if trigger == "random" else num_symbols
        self.check_sample_space(
            choices ** (smallest + jitter + 1) * (jitter + 1) * (num_symbols if trigger == "random" else 1),
            f"data.distance={smallest} with data.num_symbols={num_symbols} and data.jitter={jitter}",
            "raise data.jitter or data.num_symbols",
        )

    @property
    def chance_level(self) -> float:
        return 1.0 / (self.num_symbols - 1 if self.trigger == "random" else self.num_symbols)

    def seq_len(self, distance: int) -> int:
        return distance + self.jitter + 4

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, D, n = batch_size, distance, self.num_symbols
        L = self.seq_len(D)
        rows = torch.arange(B)

        if self.trigger == "random":  # A uniform; B and every filler symbol uniform among the other n - 1
            trigger = torch.randint(0, n, (B, 1), generator=generator)
            others = torch.randint(0, n - 1, (B, L), generator=generator)  # (B, L) in [0, n - 1)
            symbols = self.symbol_ids[
                others + (others >= trigger).long()
            ]  # skip A: A occurs only where placed
            trigger = self.symbol_ids[trigger[:, 0]]
        else:
            symbols = self.symbol_ids[torch.randint(0, n, (B, L), generator=generator)]
            trigger = torch.full((B,), self.vocab.index[TRIGGER])

        first = 1 + torch.randint(0, self.jitter + 1, (B,), generator=generator)  # first trigger: 1 + o
        answer = first + D + 2  # second trigger; the target B sits at first + 1 = answer - D - 1
        tokens = symbols
        tokens[:, 0] = self.vocab.index["<bos>"]
        tokens[rows, first] = trigger
        tokens[rows, answer] = trigger

        target = tokens[rows, first + 1]  # (B,) the symbol after the first trigger
        return TaskBatch.with_answers(tokens, answer[:, None], target[:, None], D)
