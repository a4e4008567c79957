"""ONNX weights outside the graph file: protobuf cannot hold a message over 2 GiB, and an SD-1.5 U-Net is 3.4 GB
in fp32. torch's exporter then writes one file per tensor beside ``model.onnx``; this gathers them (or, asked to,
the inline weights of a smaller model) into one ``model.onnx.data`` in the component's own subfolder, streaming,
so no second copy of the weights is ever held in memory. ONNX Runtime and TensorRT's parser read it by its
path relative to ``model.onnx``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

DATA_FILE = "model.onnx.data"
ALIGN = 4096  # tensor offsets on page boundaries, so a runtime can map them
INLINE_BELOW = 1024  # small tensors stay in the graph


def _copy_range(src: Path, offset: int, length: int | None, out) -> int:
    with open(src, "rb") as f:
        f.seek(offset)
        if length is None:
            before = out.tell()
            shutil.copyfileobj(f, out, 16 << 20)
            return out.tell() - before
        left = length
        while left:
            chunk = f.read(min(left, 16 << 20))
            if not chunk:
                raise OSError(f"{src} ends before its tensor's {length} bytes")
            out.write(chunk)
            left -= len(chunk)
        return length


def _all_tensors(model: Any) -> Any:
    """Initialisers and tensor attributes (Constant nodes), in subgraphs too."""
    from onnx import AttributeProto

    def graph_tensors(graph: Any) -> Any:
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    yield attr.t
                yield from attr.tensors
                if attr.type == AttributeProto.GRAPH:
                    yield from graph_tensors(attr.g)
                for sub in attr.graphs:
                    yield from graph_tensors(sub)

    return graph_tensors(model.graph)


def gather_external_data(path: Path, always: bool = False) -> bool:
    """Move ``path``'s weights into ``DATA_FILE`` beside it when torch wrote them as separate files (a model over
    2 GiB) or ``always``; returns whether the model now has external data."""
    import onnx
    from onnx import TensorProto

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    tensors = list(_all_tensors(model))
    outside = [t for t in tensors if t.data_location == TensorProto.EXTERNAL]
    if not outside and not always:
        return False
    sources: set[Path] = set()
    with open(path.parent / (DATA_FILE + ".tmp"), "wb") as out:
        for t in tensors:
            offset = -(-out.tell() // ALIGN) * ALIGN
            if t.data_location == TensorProto.EXTERNAL:
                info = {e.key: e.value for e in t.external_data}
                src = path.parent / info["location"]
                out.seek(offset)
                length = _copy_range(src, int(info.get("offset", 0)),
                                     int(info["length"]) if "length" in info else None, out)
                sources.add(src)
            elif t.HasField("raw_data") and len(t.raw_data) >= INLINE_BELOW:
                out.seek(offset)
                out.write(t.raw_data)
                length = len(t.raw_data)
                t.ClearField("raw_data")
            else:
                continue
            t.data_location = TensorProto.EXTERNAL
            del t.external_data[:]
            for key, value in (("location", DATA_FILE), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
    onnx.save(model, str(path))
    (path.parent / (DATA_FILE + ".tmp")).replace(path.parent / DATA_FILE)
    for src in sources:
        if src.name != DATA_FILE:
            src.unlink()
    return True
