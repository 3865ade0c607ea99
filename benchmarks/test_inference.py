"""Inference latency, onnxruntime vs PyTorch: both backbones, batch 1 and 8, every onnxruntime provider in use.

Both engines do the same work per call: a float32 N x 3 x S x S batch on the host in, logits on the host out
(so GPU timings include the host/device copies, as a deployment calling session.run with numpy does). The CPU
onnxruntime session gets as many intra-op threads as torch uses, so the ratio compares engines, not thread counts.
The median of each engine and their ratio (torch / onnxruntime) are stored in the onnxruntime benchmark's
extra_info and printed at the end of the session.
"""

from __future__ import annotations

import copy

import pytest


def test_inference(benchmark, timer, ratios, onnx_model, profile_of, sync_device, infer_case):
    import torch

    from harness import runtime

    backbone, size, batch, provider, engine = infer_case
    model, path, export_s = onnx_model(backbone, profile_of(backbone))
    device = "cpu" if provider == "cpu" else "cuda"
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    benchmark.group = f"inference {backbone} {size}px batch {batch} {provider}"
    info = benchmark.extra_info
    info.update(
        backbone=backbone,
        image_size=size,
        batch=batch,
        provider=provider,
        engine=engine,
        device=device,
        torch_threads=torch.get_num_threads(),
    )

    if engine == "torch":
        m = copy.deepcopy(model).to(device).to(memory_format=torch.channels_last).eval()

        @torch.inference_mode()
        def run():
            out = m(x.to(device).contiguous(memory_format=torch.channels_last)).cpu()
            sync_device(device)
            return out

        info.update(
            memory_format="channels_last",
            dtype="float32",
            cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32) if device == "cuda" else None,
        )
    else:
        try:
            providers = runtime.select_providers(provider)
            threads = torch.get_num_threads() if provider == "cpu" else None
            session = runtime.create_session(path, providers, threads=threads)
        except (runtime.RuntimeSetupError, runtime.ModelLoadError) as exc:
            pytest.skip(f"onnxruntime provider {provider!r} unavailable here: {exc}")
        name = session.get_inputs()[0].name
        xn = x.numpy()

        def run():
            return session.run(None, {name: xn})[0]

        info.update(
            session_providers=session.get_providers(),
            export_seconds=export_s,
            intra_op_threads=torch.get_num_threads() if provider == "cpu" else None,
        )

    # TensorRT builds an engine per new input shape on the first calls: warm up more than once there.
    median = timer(benchmark, run, warmup=3 if provider == "tensorrt" else 1)
    if median is not None:
        info["images_per_s"] = batch / median
    ratios.record((backbone, size, batch, provider), engine, median, info)
