"""The text_tokenizer backend: raw UTF-8 text in, encoder token tensors out."""

from pattern_kernel.spec import BackendSpec, Parameter

SPEC = BackendSpec(
    "text_tokenizer",
    "Tokenises TEXT [n, 1] into input_ids and attention_mask INT64 [n, longest].",
    parameters=(
        Parameter("tokenizer_file", default="tokenizer.json", doc="file in the version folder (written by export)"),
        Parameter("max_length", "int", 256, "truncation length in tokens", min=1),
        Parameter("pad_to_multiple_of", "int", 8, "pad each batch to a multiple of this length", min=1),
    ),
)
