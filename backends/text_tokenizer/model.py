"""Text tokenisation as its own model: raw UTF-8 text in, encoder token tensors out.

Parameters and extra outputs: `spec.py` beside this file (tables in the pattern's doc page).
Padding to a multiple gives batches more shapes in common, so the encoder's dynamic batcher
can merge more requests.
Input TEXT [n, 1] BYTES; outputs input_ids and attention_mask INT64 [n, longest].
Empty or non-UTF-8 text gives an INVALID_ARG error naming the input and row.
"""

from __future__ import annotations

import os

import numpy as np

from pattern_kernel.pattern_model import PatternModel
from pattern_kernel.text import decode_texts, load_tokenizer, tokenize


class TritonPythonModel(PatternModel):

    def setup(self, args):
        p = self.params
        path = os.path.join(args["model_repository"], args["model_version"], p["tokenizer_file"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"model '{self.config.name}': {path} is missing (run `make models`)")
        self.tokenizer = load_tokenizer(path, p["max_length"], p["pad_to_multiple_of"])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        name = self.config.inputs[0].name
        return tokenize(self.tokenizer, decode_texts(name, inputs[name]))
