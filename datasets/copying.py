"""Copying and selective copying: memorise M symbols, wait, then reproduce them in order.

The classic copying task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016; the S4 benchmark) and its
selective variant (Gu & Dao 2023). A sample starts with M random symbols, continues with blanks ``.``,
then shows M recall markers ``?``; at the i-th marker (an *answer position*) the model must produce the
i-th symbol.

*Copying* (``selective: false``): the M symbols come first, back to back. Distance ``D`` is the exact
number of tokens strictly between every symbol and the marker where it is reproduced (the lag of the
copy): the M - 1 later symbols, D - M + 1 blanks and the earlier markers. Layout (L = D + M + 2)::

    <bos> x1 .. xM | . . . . . . | ? ? .. ?        marker i at position D + 1 + i, target x_i
    0     1 .. M                   D+2 .. D+M+1

*Selective copying* (``selective: true``): the M symbols are scattered over a data region of ``region``
slots (default 2M), the rest blanks, so the model must pick them out of the noise and cannot solve the
task with a fixed delay. The last symbol always occupies the region's last slot, and ``D`` is its exact
lag; an earlier symbol lies further back by the number of blanks after it in the region (its lag is
``D + blanks``, at most ``D + region - M``). Every answer of the sample is tagged with ``D`` (the
``distances`` tensor), so the set of reported distances stays the configured one; the exact source
position ``p - D - 1`` holds for the last answer of every sample. Layout (L = region + D + 2)::

    <bos> . x1 . . x2 x3 . xM | . . . . | ? ? .. ?     last symbol at slot ``region``, its marker D + 1 later

Worked examples (decoded with ``task.vocab.decode`` from
``task.sample(1, 6, torch.Generator().manual_seed(0))``)::

    Copying(distance=6, length=4, num_symbols=8)
    <bos> s4 s7 s5 s0 . . . ? ? ? ?                              -> s4 s7 s5 s0
    Copying(distance=6, length=4, num_symbols=8, selective=True)      (region 8)
    <bos> s4 . . . s7 . s5 s0 . . . ? ? ? ?                      -> s4 s7 s5 s0

In the copying example ``s4`` sits at position 1 and its marker at 8: 6 tokens lie between them, as for
every symbol. In the selective one the last symbol ``s0`` sits at 8 and its marker at 15.
Chance level is 1 / num_symbols.
"""

from __future__ import annotations

import math

import torch

from longrange.datasets.base import SyntheticTask, TaskBatch, Vocabulary, check_int, distinct

SPECIALS = ("<pad>", "<bos>")
BLANK, RECALL = ".", "?"


class Copying(SyntheticTask):
    """Reproduce M symbols after a lag of D tokens; ``selective`` scatters them among blanks first.

    Args:
        distance: D, tokens strictly between a symbol (selective: the last symbol) and the marker where it
            is reproduced; an int or a list (D >= length - 1).
        eval_distance: distances for validation/test (default: ``distance``).
        length: M, symbols to memorise and reproduce (1..1024).
        num_symbols: alphabet size (2..1024); chance level is 1 / num_symbols.
        selective: scatter the symbols over a data region of ``region`` slots (selective copying).
        region: selective only: data-region slots (> length; default 2 * length).
    """

    def __init__(
        self,
        distance: int | list[int] = 32,
        eval_distance: int | list[int] | None = None,
        length: int = 4,
        num_symbols: int = 8,
        selective: bool = False,
        region: int | None = None,
    ) -> None:
        super().__init__(distance, eval_distance)
        self.length = check_int("data.length", length, 1, 1024)
        self.num_symbols = check_int("data.num_symbols", num_symbols, 2, 1024)
        if not isinstance(selective, bool):
            raise ValueError(f"data.selective={selective!r}; allowed: true or false")
        self.selective = selective
        if selective:
            self.region = 2 * length if region is None else check_int("data.region", region, length + 1, 4096)
        elif region is not None:
            raise ValueError(f"data.region={region} only applies to selective copying; allowed: null")
        else:
            self.region = length
        symbols = [f"s{i}" for i in range(num_symbols)]
        self.vocab = Vocabulary(SPECIALS, [BLANK, RECALL], symbols)
        self.symbol_ids = self.vocab.ids(symbols)
        for d in self.train_distances + self.eval_distances:
            if d < length - 1:
                raise ValueError(
                    f"data.distance={d} is too short for data.length={length}: allowed distances are >= "
                    f"{length - 1} (the symbol copied last has the other length - 1 markers before it)"
                )
        # Distinct samples: the symbols, and (selective) which region slots hold the first M - 1 of them.
        self.check_sample_space(
            num_symbols**length * math.comb(self.region - 1, length - 1),
            f"data.num_symbols={num_symbols} with data.length={length}",
            "raise data.num_symbols or data.length",
        )

    @property
    def chance_level(self) -> float:
        return 1.0 / self.num_symbols

    def seq_len(self, distance: int) -> int:
        return self.region + distance + 2

    def sample(self, batch_size: int, distance: int, generator: torch.Generator) -> TaskBatch:
        B, M, R, D = batch_size, self.length, self.region, distance
        L = self.seq_len(D)
        symbols = self.symbol_ids[torch.randint(0, self.num_symbols, (B, M), generator=generator)]  # (B, M)

        if self.selective:  # the first M - 1 symbols in random slots of 1..R-1, the last one in slot R
            slots = distinct(B, M - 1, R - 1, generator).sort(dim=1).values  # (B, M - 1) in 0..R-2
            source = torch.cat([slots + 1, torch.full((B, 1), R)], dim=1)  # (B, M) positions
        else:
            source = torch.arange(1, M + 1).expand(B, M)
        answer = R + D + 1 - M + torch.arange(1, M + 1).expand(B, M)  # (B, M): the M markers, in order

        tokens = torch.full((B, L), self.vocab.index[BLANK], dtype=torch.long)
        tokens[:, 0] = self.vocab.index["<bos>"]
        tokens[:, L - M :] = self.vocab.index[RECALL]
        tokens.scatter_(1, source, symbols)

        return TaskBatch.with_answers(tokens, answer, symbols, D)
