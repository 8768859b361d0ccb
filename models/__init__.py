"""Sequence backbones and the one LightningModule that trains them.

The backbone contract (every file in this folder that defines a model follows it):

* an ``nn.Module`` whose constructor takes only plain config values, each with a default;
* attributes ``d_input`` (width of the token embeddings it reads), ``d_output`` (width of the features it
  returns) and ``max_len`` (longest sequence it accepts, or ``None`` for any length);
* ``forward(x)``: embeddings ``(B, L, d_input)`` -> per-position features ``(B, L, d_output)``, causal:
  the features at position t depend only on inputs at positions <= t;
* optionally ``attention_maps(x)`` -> one ``(B, H, L, L)`` tensor of attention weights per layer.

The shared :class:`~longrange.models.module.LongRangeModule` owns the embedding, the readout at the answer
positions, the loss, the metrics and the optimiser, so a new variant is one file here plus one YAML in
``conf/model/``.
"""
