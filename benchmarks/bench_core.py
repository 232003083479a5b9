"""Occlusion and RISE: perturbx against Captum and a reference RISE loop, in one run.

For each model (the ResNet-18-shaped CNN at 224x224, where the model dominates, and the
demo CNN at 64x64, where the framework's own cost shows) and each method, every runner
works on the same model, input and number of queries, in its own process (so peak RSS is
its own), after one warm-up call. Printed per runner: wall seconds (median of --repeats),
the model's own forward time for the same number of queries at its best batch size (the
floor), their ratio, and peak RSS (with RSS before the call). A last table gives RISE's
peak RSS at 1,000 and 8,000 masks.

    python benchmarks/bench_core.py                       # CPU, 2 threads
    python benchmarks/bench_core.py --device cuda         # on a GPU
    python benchmarks/bench_core.py --quick               # small sizes, to check it runs
    python benchmarks/bench_core.py --models "" --repeats 1   # only the RISE memory table
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
from _memory import peak_rss_mb, rss_mb

RUNNERS = ("perturbx_occlusion", "captum_occlusion", "perturbx_rise", "reference_rise")


def build_model(name: str, device: str):
    import torch

    from perturbx.models import load_demo_model, resnet18_shaped

    if name == "resnet":
        net, size, n_classes = resnet18_shaped(1000, random_state=0), 224, 1000
    else:
        net, size, n_classes = load_demo_model(), 64, 4
    net = net.to(device).eval()
    x = np.random.default_rng(0).random((3, size, size), dtype=np.float32)
    return torch, net, x, n_classes


def sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def settings(model: str, quick: bool) -> dict:
    if model == "resnet":
        occ = {"window": (16, 16), "stride": (6, 6)}  # 36 x 36 = 1296 windows
        n_masks = 1000 if not quick else 64
    else:
        occ = {"window": (3, 3), "stride": (2, 2)}  # 32 x 32 = 1024 windows
        n_masks = 4000 if not quick else 256
    if quick:
        occ = {"window": (64, 64), "stride": (32, 32)} if model == "resnet" else {"window": (16, 16), "stride": (8, 8)}
    return {"occlusion": occ, "n_masks": n_masks, "grid": 7, "p": 0.5}


def run_perturbx_occlusion(torch, net, x, cfg, batch, device):
    import perturbx

    e = perturbx.Occlusion(**cfg["occlusion"]).explain(perturbx.adapters.Torch(net, device=device, batch_size=batch),
                                                        x, target=0)
    sync(torch, device)
    return e.n_queries, e.attributions


def run_captum_occlusion(torch, net, x, cfg, batch, device):
    from captum.attr import Occlusion

    win, stride = cfg["occlusion"]["window"], cfg["occlusion"]["stride"]
    with torch.no_grad():
        xt = torch.as_tensor(x, device=device)[None]
        a = Occlusion(net).attribute(xt, sliding_window_shapes=(3, *win), strides=(3, *stride), target=0,
                                     baselines=0.0, perturbations_per_eval=batch)
    sync(torch, device)
    n = math.prod(math.ceil((s - w) / st) + 1 for s, w, st in zip(x.shape[1:], win, stride, strict=True)) + 1
    return n, a[0, 0].cpu().numpy()


def run_perturbx_rise(torch, net, x, cfg, batch, device):
    import perturbx

    e = perturbx.RISE(n_masks=cfg["n_masks"], grid_size=cfg["grid"], p_keep=cfg["p"], random_state=0).explain(
        perturbx.adapters.Torch(net, device=device, batch_size=batch), x, target=0)
    sync(torch, device)
    return e.n_queries, e.attributions


def run_reference_rise(torch, net, x, cfg, batch, device):
    """The RISE authors' recipe: all masks made up front (skimage resize per mask), then batched forwards."""
    from skimage.transform import resize

    n, s, p = cfg["n_masks"], cfg["grid"], cfg["p"]
    h, w = x.shape[1:]
    rng = np.random.default_rng(0)
    cell = np.ceil(np.array([h, w]) / s).astype(int)
    up = (s + 1) * cell
    grid = (rng.random((n, s, s)) < p).astype("float32")
    masks = np.empty((n, h, w), dtype="float32")
    for i in range(n):
        dy, dx = rng.integers(0, cell[0]), rng.integers(0, cell[1])
        masks[i] = resize(grid[i], up, order=1, mode="reflect", anti_aliasing=False)[dy:dy + h, dx:dx + w]
    masks_t = torch.as_tensor(masks, device=device)[:, None]
    xt = torch.as_tensor(x, device=device)
    scores = []
    with torch.no_grad():
        for i in range(0, n, batch):
            scores.append(net(masks_t[i:i + batch] * xt)[:, :1])
        sal = torch.cat(scores).T @ masks_t.view(n, -1) / n / p
    sync(torch, device)
    return n, sal.view(h, w).cpu().numpy()


def forward_floor(torch, net, x, n_queries: int, device: str, batches=(16, 32, 64, 128)) -> tuple[float, int]:
    """Seconds the model alone needs for ``n_queries`` rows at its best batch size."""
    best = (math.inf, batches[0])
    xt = torch.as_tensor(x, device=device)
    with torch.inference_mode():
        for b in batches:
            inp = xt[None].repeat(b, 1, 1, 1).contiguous()
            net(inp)
            sync(torch, device)
            reps = max(2, min(20, int(256 / b)))
            t0 = time.perf_counter()
            for _ in range(reps):
                net(inp)
            sync(torch, device)
            per_row = (time.perf_counter() - t0) / (reps * b)
            best = min(best, (per_row, b))
    return best[0] * n_queries, best[1]


def child(args) -> None:
    torch, net, x, _ = build_model(args.model, args.device)
    torch.set_num_threads(args.threads)
    cfg = settings(args.model, args.quick)
    if args.n_masks:
        cfg["n_masks"] = args.n_masks
    fn = globals()[f"run_{args.runner}"]
    fn(torch, net, x, cfg, args.batch, args.device)  # warm-up
    before = rss_mb()
    walls = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        n, attr = fn(torch, net, x, cfg, args.batch, args.device)
        walls.append(time.perf_counter() - t0)
    peak_explain = peak_rss_mb()  # before the floor's own (larger-batch) forwards
    floor, best_batch = forward_floor(torch, net, x, n, args.device)
    np.save(args.attr_out, attr)
    print(json.dumps({"runner": args.runner, "queries": n, "wall": float(np.median(walls)), "floor": floor,
                      "best_batch": best_batch, "rss_before": before, "peak_rss": peak_explain}))


def spawn(runner: str, model: str, ns, n_masks: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", runner, "--model", model, "--device", ns.device,
           "--threads", str(ns.threads), "--batch", str(ns.batch), "--repeats", str(ns.repeats),
           "--attr-out", f"/tmp/bench_core_{model}_{runner}.npy"]
    cmd += ["--quick"] if ns.quick else []
    cmd += ["--n-masks", str(n_masks)] if n_masks else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="resnet,demo")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                    help="the RISE memory table (1,000 and 8,000 masks on the ResNet-shaped model)")
    ap.add_argument("--child", choices=RUNNERS)
    ap.add_argument("--model", default="resnet")
    ap.add_argument("--n-masks", type=int, default=0)
    ap.add_argument("--attr-out", default="/tmp/bench_core_attr.npy")
    ns = ap.parse_args()
    if ns.child:
        ns.runner = ns.child
        child(ns)
        return
    print(f"device={ns.device} threads={ns.threads} batch={ns.batch} repeats={ns.repeats} (median)")
    for model in filter(None, ns.models.split(",")):
        print(f"\n## {model}\n")
        print("| runner | queries | wall s | floor s | wall/floor | outside model ms/query | peak RSS MB (before) |")
        print("|---|---|---|---|---|---|---|")
        rows = {r: spawn(r, model, ns) for r in RUNNERS}
        for r, row in rows.items():
            outside = (row["wall"] - row["floor"]) / row["queries"] * 1e3
            print(f"| {r} | {row['queries']} | {row['wall']:.3f} | {row['floor']:.3f} | "
                  f"{row['wall'] / row['floor']:.3f} | {outside:.3f} | "
                  f"{row['peak_rss']:.0f} ({row['rss_before']:.0f}) |")
        for ours, peer in (("perturbx_occlusion", "captum_occlusion"), ("perturbx_rise", "reference_rise")):
            a = np.load(f"/tmp/bench_core_{model}_{ours}.npy")
            b = np.load(f"/tmp/bench_core_{model}_{peer}.npy")
            corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
            print(f"\n{ours} / {peer}: wall ratio {rows[ours]['wall'] / rows[peer]['wall']:.3f}; "
                  f"map Pearson {corr:.4f}" + (" (same masks not drawn: different seeds)" if "rise" in ours else ""))
    if ns.memory and not ns.quick:
        print("\n## RISE memory on the ResNet-shaped model\n")
        print("| n_masks | peak RSS MB | RSS before MB | growth over the call MB |")
        print("|---|---|---|---|")
        for n in (1000, 8000):
            row = spawn("perturbx_rise", "resnet", ns, n_masks=n)
            print(f"| {n} | {row['peak_rss']:.0f} | {row['rss_before']:.0f} | "
                  f"{row['peak_rss'] - row['rss_before']:.0f} |")


if __name__ == "__main__":
    main()
