"""Times one step of the PyTorch reference (darts_ref.py) the way its own benchmark does, and
adds what the benchmark does not report: peak GPU memory (torch.cuda.max_memory_allocated)
and the number of kernel launches (and memsets/copies) in one step, counted with
torch.profiler. Prints one JSON line. Used by scripts/gpu-check.sh next to `nas bench`.

    python3 ref_profile.py --ref PATH/darts_ref.py [darts_ref.py's flags: --C --layers --batch
        --k --mode --net --genotype --drop-path --steps --warmup --device]
"""
import argparse, importlib.util, json, sys, time


def load(path):
    spec = importlib.util.spec_from_file_location("darts_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--C", type=int, default=16)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--mode", default="first", choices=["first", "second", "weights_only"])
    ap.add_argument("--net", default="search", choices=["search", "eval"])
    ap.add_argument("--genotype", default="DARTS_V2")
    ap.add_argument("--drop-path", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    ref = load(a.ref)
    torch = ref.torch
    torch.manual_seed(0)
    dev = torch.device(a.device)
    mk = lambda: (torch.randn(a.batch, 3, a.size, a.size, device=dev), torch.randint(0, 10, (a.batch,), device=dev))
    if a.net == "eval":
        net = ref.EvalNetwork(ref.GENOTYPES[a.genotype], C=a.C, layers=a.layers).to(dev)
        net.train()
        net.drop_path_prob = a.drop_path
        opt = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
        x, y = mk()
        step = lambda: ref.train_step(net, opt, x, y)
    else:
        m = ref.SearchNetwork(C=a.C, layers=a.layers, k=a.k, edge_norm=a.k > 1).to(dev)
        w_opt = torch.optim.SGD(m.weights(), 0.025, momentum=0.9, weight_decay=3e-4)
        arch = ref.Architect(m, w_opt)
        (xt, yt), (xv, yv) = mk(), mk()
        step = lambda: ref.search_step(m, arch, w_opt, xt, yt, xv, yv, 0.025, a.mode)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(a.warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        sync()
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    times.sort()
    out = {"impl": "pytorch", "torch": torch.__version__, "config": vars(a),
           "step_s_median": times[len(times) // 2], "step_s_min": times[0]}
    if cuda:
        out["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
        from torch.profiler import profile, ProfilerActivity
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            sync()
        kinds = {"kernels": 0, "memsets": 0, "copies": 0}
        for e in prof.events():
            if getattr(e, "device_type", None) is None or "CUDA" not in str(e.device_type):
                continue
            name = e.name.lower()
            if "memset" in name:
                kinds["memsets"] += 1
            elif "memcpy" in name:
                kinds["copies"] += 1
            else:
                kinds["kernels"] += 1
        out["launches_per_step"] = kinds
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
