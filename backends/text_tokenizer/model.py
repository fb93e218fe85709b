"""Text tokenisation as its own model: raw UTF-8 text in, encoder token tensors out.

parameters:
  tokenizer_file      file in the version folder (default tokenizer.json, written by export)
  max_length          truncation length in tokens (the encoder's max_seq_length)
  pad_to_multiple_of  pad each batch to a multiple of this length (more shapes in common,
                      so the encoder's dynamic batcher can merge more requests)
Input TEXT [n, 1] BYTES; outputs input_ids and attention_mask INT64 [n, longest].
Empty or non-UTF-8 text gives an INVALID_ARG error naming the input and row.
"""

from __future__ import annotations

import os

import numpy as np

from pattern_kernel.model_config import parse_model_config
from pattern_kernel.text import decode_texts, load_tokenizer, tokenize
from pattern_kernel.triton_glue import count_failures, execute_requests


class TritonPythonModel:
    def initialize(self, args):
        count_failures(args)
        self.config = parse_model_config(args["model_config"])
        self.input_name = self.config.inputs[0].name
        path = os.path.join(
            args["model_repository"],
            args["model_version"],
            self.config.parameter("tokenizer_file", "tokenizer.json"),
        )
        if not os.path.exists(path):
            raise FileNotFoundError(f"model '{self.config.name}': {path} is missing (run `make models`)")
        self.tokenizer = load_tokenizer(
            path,
            self.config.int_parameter("max_length", 256),
            self.config.int_parameter("pad_to_multiple_of", 8),
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return tokenize(self.tokenizer, decode_texts(self.input_name, inputs[self.input_name]))

    def execute(self, requests):
        return execute_requests(requests, self.config.inputs, self.run, self.config.batching)
