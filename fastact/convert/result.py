"""What fastact.convert returns: Conversion (the summary table, notes, load_state_dict) and its
Change lines."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import nn

from fastact.convert.gmp import _Fold, _fold_batchnorm, _geometric
from fastact.convert.survey import _join


@dataclass(frozen=True)
class Change:
    """One line of the summary: where (a module path, or a call in a forward), what was there,
    and what it became (or, with skipped=True, why it was left as it was)."""

    path: str
    before: str
    after: str
    skipped: bool = False


@dataclass
class Conversion:
    """What fastact.convert returns: the converted model (the same object when inplace=True),
    every change and every activation left with its reason, and notes; print it for the table.
    load_state_dict loads a checkpoint of the unconverted model into the converted one."""

    model: nn.Module
    changes: list[Change]
    notes: list[str] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)  # activation name -> calls found
    _folds: list[_Fold] = field(default_factory=list, repr=False)
    _added: list[str] = field(default_factory=list, repr=False)  # paths of modules fastact added

    @property
    def converted(self) -> list[Change]:
        return [c for c in self.changes if not c.skipped]

    @property
    def skipped(self) -> list[Change]:
        return [c for c in self.changes if c.skipped]

    def __str__(self) -> str:
        total = sum(self.found.values())
        if not total and not self.changes:
            lines = ["fastact.convert: no activation found (nn.ReLU and other activation "
                     "modules, F.relu / torch.relu / Tensor.relu calls, activation attributes)"]
        else:
            kinds = ", ".join(f"{name} x{count}" for name, count in self.found.items())
            left = len([c for c in self.skipped])
            lines = [f"fastact.convert: {total} activation call(s) found ({kinds}); "
                     f"{total - left} converted, {left} left"]
            width = max(len(c.path) for c in self.changes)
            for c in self.changes:
                arrow = "-- left:" if c.skipped else "->"
                lines.append(f"  {c.path:<{width}}  {c.before} {arrow} {c.after}")
        if self.notes:
            lines.append("notes:")
            lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)

    def load_state_dict(self, state_dict: dict, strict: bool = True):
        """Loads a state dict of the model before conversion into the converted model: layers
        folded into GmP modules are rebuilt from their weights (and BatchNorm statistics) and
        converted again, exactly as fastact.convert did; every other entry loads as it is.
        Parameters fastact added (DCT coefficients, new activation modules) keep their values.
        Note that relu="dct" fitted to example inputs fitted the ranges of the weights the
        model had then: for that, load the checkpoint first and convert after.
        Returns torch's (missing_keys, unexpected_keys), those of added modules left out."""
        state = dict(state_dict)
        for fold in self._folds:
            sources = {}
            for path, template in fold.templates.items():
                prefix = path + "."
                device = next(self.model.get_submodule(fold.layer_path).parameters()).device
                module = copy.deepcopy(template).to_empty(device=device)
                module.load_state_dict({k[len(prefix):]: state.pop(k) for k in list(state)
                                        if k.startswith(prefix)})
                sources[path] = module
            layer = sources[fold.layer_path]
            if fold.bn_path is not None:
                layer = _fold_batchnorm(layer, sources[fold.bn_path])
            geometric = _geometric(layer)
            target = self.model.get_submodule(fold.layer_path)
            target.load_state_dict(geometric.state_dict())
            for key in geometric.state_dict():
                state[_join(fold.layer_path, key)] = target.state_dict()[key]
        result = self.model.load_state_dict(state, strict=False)
        added = tuple(path + "." for path in self._added)
        missing = [k for k in result.missing_keys if not k.startswith(added)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"fastact.Conversion.load_state_dict: missing keys {missing}, "
                               f"unexpected keys {result.unexpected_keys}")
        return type(result)(missing, result.unexpected_keys)
