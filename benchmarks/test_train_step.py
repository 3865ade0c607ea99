"""One training step (forward, backward, optimizer step) per backbone and training phase, as harness.train.fit runs it.

The step is fit()'s inner loop without the augmentation (benchmarked on its own in test_augment.py): the backbone's
memory format (Backbone.channels_last), input already on the device, the precision `precision = "auto"` resolves to
here (harness.precision: bf16 autocast on CUDA, and on a CPU with AMX / AVX512-BF16 for a backbone that gains from
it), cross-entropy on probability targets with the profile's label
smoothing, the phase's optimizer over its trainable parameters (harness.train.train_step), then `loss.item()`.
Image and batch size come from the backbone's benchmark profile (--bench-vgg16-profile / --bench-lite0-profile).
"""

from __future__ import annotations


def test_train_step(benchmark, timer, make_model, sync_device, train_case, device):
    import torch
    import torch.nn.functional as F

    from harness.backbones import get_backbone, set_trainable
    from harness.precision import resolve
    from harness.train import _optimizer, _set_train_mode, train_step  # fit()'s own pieces: the step cannot drift

    backbone, profile, init, phase = train_case
    size, bs, classes = profile.image_size, profile.batch_size, 6
    model = make_model(backbone, profile)  # init does not change the cost; the phase's trainable set does
    trainable = set_trainable(model, backbone, phase.train_from)
    fmt = get_backbone(backbone).memory_format
    model.to(device).to(memory_format=fmt)
    opt = _optimizer(phase, [p for p in model.parameters() if p.requires_grad])
    _set_train_mode(model, phase, freeze_bn=profile.freeze_bn and init == "imagenet")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(bs, 3, size, size, generator=g).to(device).contiguous(memory_format=fmt)
    target = F.one_hot(torch.randint(0, classes, (bs,), generator=g), classes).float().to(device)
    dev = torch.device(device)
    precision = resolve(profile.precision, backbone, dev, size)

    def step():
        value = train_step(model, opt, x, target, dev, profile.label_smoothing, precision)[0].item()
        sync_device(device)
        return value

    benchmark.group = f"train step {backbone} {size}px batch {bs}"
    benchmark.extra_info.update(
        backbone=backbone,
        profile=profile.name,
        image_size=size,
        batch=bs,
        init=init,
        phase=phase.name,
        train_from=phase.train_from,
        optimizer=phase.optimizer,
        trainable_params=trainable,
        device=device,
        precision=precision.resolved,
        channels_last=get_backbone(backbone).channels_last,
        torch_threads=torch.get_num_threads(),
    )
    median = timer(benchmark, step)
    if median is not None:
        benchmark.extra_info["images_per_s"] = bs / median


def test_probe_phase(benchmark, timer, make_model, prepared, model_case, device):
    """A profile's probe phase (LP-FT's first step, harness.probe_head.fit_head_probe) on the training part of the
    bundled books: pooled features of every training photo, the cross-validated logistic regression, the head
    written; once per backbone whose profile starts an init with a probe phase (the cpu profile's imagenet)."""
    import pytest
    import torch

    from harness.backbones import get_backbone, set_trainable
    from harness.probe_head import fit_head_probe

    backbone, profile = model_case
    if not any(ph and ph[0].optimizer == "probe" and ph[0].epochs > 0 for ph in profile.phases.values()):
        pytest.skip(f"profile {profile.name!r} has no probe phase for {backbone}")
    data = prepared(profile)
    model = make_model(backbone, profile)
    set_trainable(model, backbone, "head")
    model.to(device).to(memory_format=get_backbone(backbone).memory_format)
    dev = torch.device(device)

    def fit():
        return fit_head_probe(model, data.train_x, data.train_y, data.classes, dev)["C"]

    benchmark.group = f"probe phase {backbone} {profile.image_size}px"
    benchmark.extra_info.update(
        backbone=backbone, profile=profile.name, image_size=profile.image_size, photos=len(data.train_x), device=device
    )
    median = timer(benchmark, fit)
    if median is not None:
        benchmark.extra_info["photos_per_s"] = len(data.train_x) / median
