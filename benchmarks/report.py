"""The speed suite's outputs: the terminal table, the Markdown report, the PNG plots and a
progress bar."""

from __future__ import annotations

import sys
import time
from pathlib import Path

MIB = 2**20


def _providers(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(p for row in rows for p in row["ms"]))


def _by_op(rows: list[dict]) -> dict[str, list[dict]]:
    ops: dict[str, list[dict]] = {}
    for row in rows:
        ops.setdefault(row["op"], []).append(row)
    return ops


def _memory_rows(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row.get("peak_mib")]


def _limits(rows: list[dict]) -> str:
    """What the limit provider runs, per mode: "forward: x.clone(); backward: ..."."""
    return "; ".join(f"{mode}: {name}" for mode, name in
                     dict((row["mode"], row["limit_name"]) for row in rows).items())


def print_rows(rows: list[dict]) -> None:
    """One op's table: median ms per provider, and the ratios of the fastest fastact backend."""
    providers = _providers(rows)
    width = max(15, *(len(p) + 2 for p in providers))
    print(f"\n{rows[0]['op']} (median ms; ratios of the fastest fastact backend)\n"
          f"limit = {_limits(rows)}")
    print(f"{'mode':<17} {'dtype':<9} {'size':<12}" + "".join(f"{p:>{width}}" for p in providers)
          + f"{'fastact/limit':>15}{'vs compiled':>13}{'vs eager':>10}")
    for row in rows:
        r = row["ratios"]
        print(f"{row['mode']:<17} {row['dtype']:<9} {row['size']:<12}"
              + "".join(f"{row['ms'].get(p, float('nan')):>{width}.3f}" for p in providers)
              + f"{r['fastact/limit']:>14.2f}x{r['compiled/fastact']:>12.2f}x"
              + f"{r['eager/fastact']:>9.2f}x")
    memory = _memory_rows(rows)
    if memory:
        print(f"peak memory of forward+backward (MiB above the inputs; {memory[0]['peak_how']})")
        mem_providers = _providers([{"ms": row["peak_mib"]} for row in memory])
        print(f"{'dtype':<9} {'size':<12}" + "".join(f"{p:>{width}}" for p in mem_providers))
        for row in memory:
            print(f"{row['dtype']:<9} {row['size']:<12}"
                  + "".join(f"{row['peak_mib'].get(p, float('nan')):>{width}.1f}"
                            for p in mem_providers))


def machine_line(info: dict) -> str:
    return (f"{info['cpu']} ({info['cores']} cores, {info['threads']} threads)"
            f"{', GPU ' + info['gpu'] if info['gpu'] else ''}; torch {info['torch']}, "
            f"triton {info['triton']}, CPU kernels {info['cpu_kernels']}, commit "
            f"{info['commit']}, {info['date']}, load average {info['load']}")


def markdown(rows: list[dict], info: dict, plots: dict[str, list[str]]) -> str:
    lines = ["# fastact speed benchmark\n",
             f"Machine: {machine_line(info)}.\n",
             "Median ms (p20-p80 in brackets) per provider: `fastact[<backend>]`, the "
             "reference in eager mode, the reference under `torch.compile`, and `limit`, a "
             "native op moving the same bytes. `fastact/limit` is the fastest fastact "
             "backend's time over the limit's (1.0 = at the memory-bound limit); `vs compiled` "
             "and `vs eager` are the reference's time over fastact's (higher is better).\n"]
    for op, op_rows in _by_op(rows).items():
        providers = _providers(op_rows)
        lines.append(f"\n## {op}\n")
        lines.append(f"limit = {_limits(op_rows)}\n")
        lines.append("| mode | dtype | size | " + " | ".join(providers)
                     + " | fastact/limit | vs compiled | vs eager |")
        lines.append("|" + "---|" * (3 + len(providers) + 3))
        for row in op_rows:
            r = row["ratios"]
            cells = [f"{row['ms'][p]:.3f} ({row['p20_ms'][p]:.3f}-{row['p80_ms'][p]:.3f})"
                     if p in row["ms"] else "" for p in providers]
            lines.append(f"| {row['mode']} | {row['dtype']} | {row['size']} | "
                         + " | ".join(cells)
                         + f" | {r['fastact/limit']:.2f} | {r['compiled/fastact']:.2f}x"
                         f" | {r['eager/fastact']:.2f}x |")
        memory = _memory_rows(op_rows)
        if memory:
            mem_providers = _providers([{"ms": row["peak_mib"]} for row in memory])
            lines.append(f"\nPeak memory of forward+backward, MiB above the inputs "
                         f"({memory[0]['peak_how']}):\n")
            lines.append("| dtype | size | " + " | ".join(mem_providers) + " |")
            lines.append("|" + "---|" * (2 + len(mem_providers)))
            for row in memory:
                lines.append(f"| {row['dtype']} | {row['size']} | "
                             + " | ".join(f"{row['peak_mib'][p]:.1f}" if p in row["peak_mib"]
                                          else "" for p in mem_providers) + " |")
        for plot in plots.get(op, []):
            lines.append(f"\n![{op}]({plot})")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out: Path) -> dict[str, list[str]]:
    """Per op, two PNGs (a panel per mode and dtype): time vs size per provider with its
    p20-p80 band, and the fraction of the memory-bound limit each provider reaches
    (limit time / provider time). Returns the paths relative to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(parents=True, exist_ok=True)
    written: dict[str, list[str]] = {}
    for op, op_rows in _by_op(rows).items():
        modes = list(dict.fromkeys(row["mode"] for row in op_rows))
        dtypes = list(dict.fromkeys(row["dtype"] for row in op_rows))
        providers = _providers(op_rows)
        for kind in ("time", "limit"):
            fig, axes = plt.subplots(len(modes), len(dtypes), squeeze=False, sharex=True,
                                     figsize=(4.5 * len(dtypes), 3.2 * len(modes)))
            for i, mode in enumerate(modes):
                for j, dtype in enumerate(dtypes):
                    ax = axes[i][j]
                    panel = sorted((row for row in op_rows
                                    if row["mode"] == mode and row["dtype"] == dtype),
                                   key=lambda row: row["numel"])
                    x = [row["numel"] for row in panel]
                    for provider in providers:
                        if kind == "limit" and provider == "limit":
                            continue
                        pts = [(xi, row) for xi, row in zip(x, panel) if provider in row["ms"]]
                        if not pts:
                            continue
                        xs = [p[0] for p in pts]
                        if kind == "time":
                            ax.plot(xs, [r["ms"][provider] for _, r in pts], marker="o",
                                    label=provider)
                            ax.fill_between(xs, [r["p20_ms"][provider] for _, r in pts],
                                            [r["p80_ms"][provider] for _, r in pts], alpha=0.2)
                        else:
                            ax.plot(xs, [r["ms"]["limit"] / r["ms"][provider] for _, r in pts],
                                    marker="o", label=provider)
                    ax.set_xscale("log", base=2)
                    if kind == "time":
                        ax.set_yscale("log")
                        ax.set_ylabel("median ms")
                    else:
                        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
                        ax.set_ylabel("limit time / time")
                    ax.set_xticks(x, [row["size"] for row in panel], fontsize=7)
                    ax.set_title(f"{mode}, {dtype}" + (f" (limit: {panel[0]['limit_name']})"
                                                       if kind == "limit" and panel else ""),
                                 fontsize=8)
                    ax.grid(alpha=0.3)
            axes[0][0].legend(fontsize=7)
            title = ("time per call vs size (p20-p80 shaded)" if kind == "time" else
                     "fraction of the memory-bound limit each provider reaches")
            fig.suptitle(f"{op}: {title}", fontsize=10)
            fig.tight_layout()
            path = f"plots/{op}_{kind}.png"
            fig.savefig(out / path, dpi=90)
            plt.close(fig)
            written.setdefault(op, []).append(path)
    return written


class Progress:
    """A one-line progress bar on stderr (a line every 20 s when stderr is not a terminal).
    Work is counted in weighted units; the time left assumes the rest goes at the pace so far."""

    def __init__(self, total: float):
        self.total, self.done = total, 0.0
        self.start = self.last_line = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, label: str, weight: float = 1.0) -> None:
        self.done += weight
        now = time.perf_counter()
        elapsed = now - self.start
        total = max(self.total, self.done)
        left = elapsed / self.done * (total - self.done)
        filled = round(20 * self.done / total)
        text = (f"[{'#' * filled}{'.' * (20 - filled)}] {self.done / total:4.0%} {label:<44.44} "
                f"{mmss(elapsed)} elapsed, ~{mmss(left)} left")
        if self.tty:
            sys.stderr.write("\r" + text)
            sys.stderr.flush()
        elif now - self.last_line >= 20:
            print(text, file=sys.stderr, flush=True)
            self.last_line = now

    def clear(self) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 110 + "\r")
            sys.stderr.flush()


def mmss(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"
