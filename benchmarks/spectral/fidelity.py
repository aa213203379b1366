"""Part 2 — kernel fidelity: for every op, dtype and backend runnable here, the spectrum of
the kernel output's error against the float64 reference, per octave band
(fastact.spectral.spectral_error), against the dtype's rounding floor.

Inputs are signals along time (a tone plus noise, through the op's natural input range), built
in float64 and rounded to the dtype; the reference runs in float64 on exactly those rounded
values (and rounded parameters), so the figure is the kernel's own error — the cost of
computing in float32 and rounding the output — not the input's quantisation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import fastact
from fastact import spectral

from .common import Claim, PartResult, Table, plt, save_figure, write_json

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "float64": torch.float64}
# The dtypes' rounding floors: every band of a kernel's error must be at or below these.
GOALS_DB = {"float32": -120.0, "float16": -55.0, "bfloat16": -40.0}


@dataclass
class Signals:
    """Length of the time axis and the size of the other dims, per backend speed."""

    time: int
    width: int  # features / channels


FAST = Signals(time=2**16, width=16)
QUICK = Signals(time=2**14, width=8)
INTERPRETED = Signals(time=2**11, width=4)  # the Triton interpreter: ~1.4 s per 1M elements
QUICK_INTERPRETED_SHORTER = 4  # --quick: the interpreted signals 4x shorter (most of its time)


def waves(shape: tuple[int, ...], time_dim: int, generator: torch.Generator, offset=0.0,
          amplitude=1.0, noise=0.05) -> torch.Tensor:
    """float64 tensor of `shape`: along time_dim, offset + amplitude cos(2 pi f t + phase) with
    a frequency and phase per lane (f from 3 to 97 cycles), plus Gaussian noise."""
    n = shape[time_dim]
    lanes = [s for i, s in enumerate(shape) if i != time_dim]
    count = math.prod(lanes)
    f = torch.randint(3, 98, (count, 1), generator=generator).double()
    phase = 2 * math.pi * torch.rand(count, 1, generator=generator, dtype=torch.float64)
    t = torch.arange(n, dtype=torch.float64)
    signal = offset + amplitude * torch.cos(2 * math.pi * f * t / n + phase)
    signal = signal + noise * torch.randn(count, n, generator=generator, dtype=torch.float64)
    return signal.view(*lanes, n).movedim(-1, time_dim).contiguous()


@dataclass
class Case:
    """One op configuration. `inputs(sizes, generator)` gives float64 tensors (first the
    activation input); `call(*tensors)` runs the public op (kernel or reference); `signals`
    turns each output into [..., time]."""

    name: str
    registered: str  # the fastact:: op it exercises
    needs: str  # the fastact attribute that must exist
    inputs: Callable[[Signals, torch.Generator], list[torch.Tensor]]
    call: Callable[..., object]
    reference: Callable[..., object]
    signals: Callable[[object], dict[str, torch.Tensor]]
    interpreted_time: int = 2**11  # fewer where the interpreter runs a program per row (at most
    # INTERPRETED.time)


def _single(name):
    return lambda out: {name: out}


def cases() -> list[Case]:
    def hat_inputs(s, g):
        return [waves((s.time,), 0, g, offset=1.0, amplitude=1.2)]

    def dct_inputs(s, g):
        x = waves((2, s.width, s.time), 2, g, amplitude=1.4)  # beyond the domain too
        coeffs = 0.5 * torch.randn(s.width, 6, generator=g, dtype=torch.float64)
        return [x, coeffs]

    def dct_call(frequencies, boundary, op):
        return lambda x, c: op(x, c, channel_dim=1, domain=(-1.0, 1.0),
                               frequencies=frequencies, boundary=boundary)

    def angles(s, g):
        # Angles around pi/2 (where the products of sines stay large), one tone each.
        return [waves((s.time, s.width - 1), 0, g, offset=math.pi / 2, amplitude=1.2)]

    def cartesian(s, g):
        return [waves((s.time, s.width), 0, g, amplitude=1.0, noise=0.2)]

    def unit_directions(out_features, in_features, g):
        w = torch.randn(out_features, in_features, generator=g, dtype=torch.float64)
        radius, theta = fastact.reference.cartesian_to_spherical(w)
        return theta, radius

    def linear_inputs(s, g):
        x = waves((s.time, 2 * s.width), 0, g, amplitude=1.0, noise=0.2)
        theta, radius = unit_directions(s.width, 2 * s.width, g)
        bias = 0.3 * torch.randn(s.width, generator=g, dtype=torch.float64)
        return [x, theta, radius, bias]

    def conv_inputs(s, g):
        channels = max(2, s.width // 4)
        x = waves((1, channels, 4, s.time // 8), 3, g, amplitude=1.0, noise=0.2)
        theta, radius = unit_directions(s.width, channels * 9, g)
        bias = 0.3 * torch.randn(s.width, generator=g, dtype=torch.float64)
        return [x, theta, radius, bias]

    def conv_call(op):
        return lambda x, th, r, b: op(x, th, r, b, kernel_size=3, padding=1)

    ref = fastact.reference
    return [
        Case("hat", "hat", "hat", hat_inputs, fastact.hat, ref.hat, _single("y")),
        Case("dct_activation (odd, periodic)", "dct_activation", "dct_activation", dct_inputs,
             dct_call("odd", "periodic", getattr(fastact, "dct_activation", None)),
             dct_call("odd", "periodic", getattr(ref, "dct_activation", None)), _single("y")),
        Case("dct_activation (all, clamp)", "dct_activation", "dct_activation", dct_inputs,
             dct_call("all", "clamp", getattr(fastact, "dct_activation", None)),
             dct_call("all", "clamp", getattr(ref, "dct_activation", None)), _single("y")),
        Case("spherical_to_cartesian", "spherical_to_cartesian", "spherical_to_cartesian",
             angles, getattr(fastact, "spherical_to_cartesian", None),
             getattr(ref, "spherical_to_cartesian", None), lambda u: {"u": u.T},
             interpreted_time=2**8),
        Case("cartesian_to_spherical", "cartesian_to_spherical", "cartesian_to_spherical",
             cartesian, getattr(fastact, "cartesian_to_spherical", None),
             getattr(ref, "cartesian_to_spherical", None),
             lambda out: {"radius": out[0], "theta": out[1].T}),
        Case("geometric_relu", "geometric_relu_linear", "geometric_relu", linear_inputs,
             getattr(fastact, "geometric_relu", None), getattr(ref, "geometric_relu", None),
             lambda z: {"z": z.T}),
        Case("geometric_relu_conv2d (3x3, pad 1)", "geometric_relu_conv2d",
             "geometric_relu_conv2d", conv_inputs,
             conv_call(getattr(fastact, "geometric_relu_conv2d", None)),
             conv_call(getattr(ref, "geometric_relu_conv2d", None)), _single("z")),
    ]


def registered_ops() -> set[str]:
    """The forward ops fastact registers (backward and gradient helpers excluded)."""
    names = set()
    for full in torch._C._dispatch_get_all_op_names():
        namespace, _, name = full.partition("::")
        if namespace == "fastact" and "backward" not in name and "grad" not in name:
            names.add(name.split(".")[0])
    return names


def kernel_backends(device: str) -> list[str]:
    available = fastact.available_backends()
    wanted = {"cpu": ["cpu", "triton"], "cuda": ["cuda", "triton"]}[device]
    return [b for b in wanted if b in available] + ["reference"]


# A pseudo-backend: the float64 result rounded to the dtype, i.e. what a correctly rounded
# kernel would return. Its error is the dtype's own rounding floor for this op and input.
FLOOR = "rounded f64"


def measure(case: Case, backend: str, dtype: torch.dtype, device: str, sizes: Signals):
    generator = torch.Generator().manual_seed(sum(map(ord, case.name)))
    exact = case.inputs(sizes, generator)
    rounded = [t.to(dtype) for t in exact]
    with torch.no_grad():
        expected = case.reference(*[t.double() for t in rounded])
    references = case.signals(expected)
    if backend == FLOOR:
        outputs = {name: signal.to(dtype) for name, signal in references.items()}
    else:
        with fastact.use_backend(backend), torch.no_grad():
            outputs = case.signals(case.call(*[t.to(device) for t in rounded]))
    for name in outputs:
        if outputs[name].dtype != dtype:
            raise AssertionError(f"{case.name}[{backend}]: output {name} is {outputs[name].dtype}, "
                                 f"expected {dtype}")
    return {name: spectral.spectral_error(outputs[name].cpu(), references[name])
            for name in outputs}


def run(folder: Path, quick: bool, device: str) -> PartResult:
    result = PartResult("fidelity", "2. Kernel fidelity (error spectrum vs the float64 reference)")
    backends = kernel_backends(device)
    fast = QUICK if quick else FAST
    shorter = QUICK_INTERPRETED_SHORTER if quick else 1

    def interpreted(case: Case) -> Signals:
        return Signals(min(case.interpreted_time, INTERPRETED.time) // shorter,
                       INTERPRETED.width)

    all_cases = cases()
    present = [c for c in all_cases if hasattr(fastact, c.needs)]
    missing = sorted({c.needs for c in all_cases if not hasattr(fastact, c.needs)})
    covered = {c.registered for c in present}
    uncovered = sorted(registered_ops() - covered)
    if device == "cpu" and "triton" in backends:
        sizes_note = (f" (triton through the interpreter: {INTERPRETED.time // shorter} time "
                      "samples" + "".join(f" ({interpreted(c).time} for {c.name})" for c in present
                                          if c.interpreted_time < INTERPRETED.time)
                      + f" x {INTERPRETED.width} lanes; others {fast.time} x {fast.width})")
    else:
        sizes_note = f" ({fast.time} time samples x {fast.width} lanes)"
    result.notes.append(
        f"Backends: {', '.join(backends)} on `{device}`" + sizes_note
        + ". Goals per band: " + ", ".join(f"{d} <= {g:g} dB" for d, g in GOALS_DB.items())
        + " (kernel backends; `reference` computes in the input dtype and is shown as a control"
        f" without a goal; `{FLOOR}` is the float64 result rounded to the dtype, the best any "
        "kernel can do). 'exact' = no error at all.")
    if missing:
        result.notes.append(f"Not in this build, not measured: {', '.join(missing)}.")
    if uncovered:
        result.notes.append(f"Registered ops without a fidelity case: {', '.join(uncovered)}.")
    if device == "cpu" and "triton" not in backends:
        result.notes.append("triton: not measured (no GPU and TRITON_INTERPRET=1 was not set "
                            "before fastact was imported).")

    table = Table("Error spectrum of the kernel output vs float64 (dB relative to the "
                  "reference's energy)",
                  ["op", "output", "dtype", "backend", "dc", "worst band", "worst dB",
                   "top band dB", "total dB", "goal", "status"])
    records, flagged = [], []
    for case in present:
        for dtype_name, dtype in DTYPES.items():
            for backend in backends + [FLOOR]:
                sizes = interpreted(case) if (backend == "triton" and device == "cpu") else fast
                for output, bands in measure(case, backend, dtype, device, sizes).items():
                    worst_band = max(bands, key=bands.get)
                    if bands[worst_band] == -math.inf:
                        worst_band = None  # exact in every band
                    linear = sum(10 ** (db / 10) for db in bands.values() if db > -math.inf)
                    total = 10 * math.log10(linear) if linear > 0 else -math.inf
                    goal = GOALS_DB.get(dtype_name) if backend not in ("reference", FLOOR) else None
                    over = [b for b, db in bands.items() if goal is not None and db > goal]
                    if backend in (FLOOR, "reference"):
                        status = "floor" if backend == FLOOR else "control"
                    else:
                        status = "—" if goal is None else ("FLAG: " + ", ".join(over) if over
                                                           else "ok")
                    if over:
                        flagged.append(f"{case.name}/{output} {dtype_name} [{backend}]: "
                                       + ", ".join(f"{b} {bands[b]:.1f} dB" for b in over))
                    top = list(bands)[-1]
                    table.add(case.name, output, dtype_name, backend, bands["dc"], worst_band,
                              bands[worst_band] if worst_band else -math.inf, bands[top], total,
                              goal, status)
                    records.append({"op": case.name, "registered_op": case.registered,
                                    "output": output, "dtype": dtype_name, "backend": backend,
                                    "time_samples": sizes.time, "bands_db": bands,
                                    "total_db": total, "goal_db": goal, "over_goal": over})
    result.tables.append(table)
    result.tables.append(compact(records, [b for b in backends if b != "reference"] + [FLOOR]))
    kernel_rows = [r for r in records if r["goal_db"] is not None]
    result.claims.append(Claim(
        "fastact", "Every kernel is spectrally faithful: its error sits at or below the dtype's "
        "rounding floor in every band.",
        (not flagged) if kernel_rows else None,
        (f"{len(kernel_rows)} kernel outputs over {len(present)} op configurations; "
         + ("none above goal." if not flagged else "above goal: " + "; ".join(flagged)))
        if kernel_rows else "no kernel backend measured."))
    write_json(folder / "fidelity.json", {"goals_db": GOALS_DB, "backends": backends,
                                          "missing": missing, "uncovered_ops": uncovered,
                                          "rows": records})
    plot(folder, records, result)
    return result


def compact(records: list[dict], kernels: list[str]) -> Table:
    """The worst band per op output and dtype, one cell per dtype listing the kernel backends."""
    table = Table(f"Worst band (dB) of each kernel's error, per dtype ({' / '.join(kernels)}); "
                  "goal in brackets; * = above goal",
                  ["op", "output"] + [f"{d} [{GOALS_DB.get(d, '—')}]" for d in DTYPES])
    for op, output in dict.fromkeys((r["op"], r["output"]) for r in records):
        cells = []
        for dtype in DTYPES:
            values = []
            for backend in kernels:
                row = next(r for r in records if (r["op"], r["output"], r["dtype"], r["backend"])
                           == (op, output, dtype, backend))
                worst = max(row["bands_db"].values())
                values.append(("exact" if worst == -math.inf else f"{worst:.1f}")
                              + ("*" if row["over_goal"] else ""))
            cells.append(" / ".join(values))
        table.add(op, output, *cells)
    return table


def plot(folder: Path, records: list[dict], result: PartResult) -> None:
    ops = list(dict.fromkeys((r["op"], r["output"]) for r in records))
    columns = min(3, len(ops))
    rows = math.ceil(len(ops) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.2 * rows), squeeze=False)
    colours = {"float32": "C0", "float16": "C1", "bfloat16": "C2", "float64": "C3"}
    styles = {"cpu": "-", "cuda": "-", "triton": "--", "reference": ":", FLOOR: "-."}
    floor = -360.0  # where 'exact' (-inf) is drawn
    for ax, (op, output) in zip(axes.flat, ops):
        for r in (r for r in records if r["op"] == op and r["output"] == output):
            bands = r["bands_db"]
            values = [max(v, floor) for v in bands.values()]
            ax.plot(range(len(values)), values, styles[r["backend"]], color=colours[r["dtype"]],
                    lw=1, label=f"{r['dtype']} {r['backend']}")
        for dtype, goal in GOALS_DB.items():
            ax.axhline(goal, color=colours[dtype], lw=0.6, alpha=0.6)
        ax.set_title(f"{op}: {output}", fontsize=8)
        ax.set_xlabel("octave band (0 = dc, j = bins 2^(j-1)..2^j-1)", fontsize=7)
        ax.set_ylabel("dB", fontsize=7)
        ax.set_ylim(floor - 10, 0)
    for ax in axes.flat[len(ops):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=5, ncol=2)
    save_figure(fig, folder, "fidelity.png", result)
