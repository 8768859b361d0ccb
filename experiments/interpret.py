"""Where does a trained model look? Its attention on a sentence you type, as the training run's figure.

    python -m longrange.experiments.interpret CKPT "i watched a movie then the"
    python -m longrange.experiments.interpret CKPT "i watched a movie then the" --distance 1 --out a.png

The last word is the answer position. The antecedent marked in the figure is the word ``--distance``
tokens before it (D tokens strictly between, as in the tasks); without ``--distance``, the latest earlier
occurrence of the word the model predicts, if there is one. Words must come from the run's vocabulary
(an unknown word is an error that lists the allowed ones); ``<bos>`` is prepended when the vocabulary
has it, as in training. A model without attention maps gets its prediction printed and no figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from longrange.datasets.base import Vocabulary
from longrange.experiments.figures import attention_figure
from longrange.experiments.run.measurements import attention_maps, has_attention
from longrange.models.module import LongRangeModule


def interpret(
    checkpoint: Path, sentence: str, out: Path, distance: int | None = None, top: int = 5
) -> Path | None:
    """Print the model's prediction at the last word and write the attention figure to ``out``.

    Returns ``out``, or None when the model has no attention maps. Raises ValueError for unknown words
    (the message lists the allowed words), an empty sentence or a ``distance`` outside the sentence.
    """
    module = LongRangeModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    vocab = Vocabulary(module.hparams["vocab"])
    words = sentence.split()
    if "<bos>" in vocab.index and words[:1] != ["<bos>"]:
        words = ["<bos>", *words]
    tokens = vocab.encode(" ".join(words))[None]  # (1, L); raises on unknown words
    answer = tokens.shape[1] - 1
    if answer < 1:
        raise ValueError("the sentence is empty: type at least one word")
    with torch.no_grad():
        probabilities = module.head(module(tokens)[0, answer]).softmax(-1)  # (V,)
    best = probabilities.topk(min(top, len(probabilities)))
    guesses = ", ".join(f"{vocab.words[i]} {p:.3f}" for p, i in zip(*best, strict=True))
    print(f"prediction after '{' '.join(words)}': {guesses}")
    predicted = vocab.words[int(best.indices[0])]

    antecedent: int | None = None
    if distance is not None:
        antecedent = answer - distance - 1
        if not 0 <= antecedent < answer:
            raise ValueError(f"--distance={distance} points outside the sentence; allowed: 0..{answer - 1}")
    else:
        earlier = [i for i, w in enumerate(words[:answer]) if w == predicted]
        antecedent = earlier[-1] if earlier else None

    if not has_attention(module):
        print(f"{module.backbone.__class__.__name__} has no attention maps: nothing to draw")
        return None
    maps = [m[0] for m in attention_maps(module, tokens)]  # layers x (H, L, L)
    if antecedent is not None:
        mass = ", ".join(f"layer {i} {m[:, answer, antecedent].max():.3f}" for i, m in enumerate(maps))
        print(f"attention on '{words[antecedent]}' (position {antecedent}), max over heads: {mass}")
    marked = (
        f"antecedent '{words[antecedent]}' at {antecedent}" if antecedent is not None else "no antecedent"
    )
    title = f"{Path(checkpoint).name} · {marked}, answer at {answer} · predicted '{predicted}'"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    attention_figure(words, maps, answer, antecedent, title, full_max_len=40).savefig(out)
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m longrange.experiments.interpret",
        description="Render a trained checkpoint's attention maps for a sentence.",
    )
    parser.add_argument("checkpoint", type=Path, help="a run's checkpoint, e.g. <run>/checkpoints/last.ckpt")
    parser.add_argument("sentence", help='words from the task vocabulary, e.g. "i watched a movie then the"')
    parser.add_argument("--distance", type=int, help="mark the word D tokens before the last as antecedent")
    parser.add_argument("--out", type=Path, default=Path("attention.png"), help="PNG to write")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file():
        parser.error(f"no checkpoint at {args.checkpoint}")
    try:
        interpret(args.checkpoint, args.sentence, args.out, args.distance)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
