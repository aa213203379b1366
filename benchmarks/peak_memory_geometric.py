"""Peak memory of one forward+backward (CPU): the growth of the process's max RSS over the
step, in a fresh subprocess per provider, with glibc's mmap threshold fixed so that every
large tensor is mapped on allocation and unmapped on free (RSS follows live tensors)."""
import os, subprocess, sys, textwrap
CODE = textwrap.dedent('''
    import resource, sys, torch, fastact, gc
    torch.manual_seed(0)
    B, I, O = map(int, sys.argv[2:5])
    kind = sys.argv[1]
    x = torch.randn(B, I, requires_grad=True)
    g = torch.randn(B, O)
    if kind == "gmp":
        layer = fastact.nn.GeometricReLU(I, O)
        params = [x, layer.theta, layer.radius, layer.bias]
        f = lambda: layer(x)
    elif kind == "gmp-reference":
        layer = fastact.nn.GeometricReLU(I, O)
        params = [x, layer.theta, layer.radius, layer.bias]
        f = lambda: fastact.reference.geometric_relu(x, layer.theta, layer.radius, layer.bias)
    else:
        layer = torch.nn.Linear(I, O)
        params = [x, layer.weight, layer.bias]
        f = lambda: torch.relu(layer(x))
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = f()
    grads = torch.autograd.grad(out, params, g)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) / 1024)
''')
B, I, O = 1024, 1024, 1024
env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "2"}
for kind in ("linear+relu", "gmp", "gmp-reference"):
    runs = [float(subprocess.run([sys.executable, "-c", CODE, kind, str(B), str(I), str(O)], env=env,
                                 capture_output=True, text=True).stdout.strip() or "nan") for _ in range(3)]
    print(f"{kind:14s} peak growth over a forward+backward: {min(runs):6.1f} MiB (runs {runs})")
print(f"one [{B}, {O}] float32 tensor = {B*O*4/2**20:.1f} MiB; theta [{O}, {I-1}] = {O*(I-1)*4/2**20:.1f} MiB")
