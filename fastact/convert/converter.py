"""The conversion itself: decides each surveyed site's action (fold, replace or leave, with the
reason), applies it, rewrites forwards where needed, fits relu="dct" and writes the notes."""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import nn

from fastact.convert.dct_fit import (
    DCT_COVERAGE,
    DCT_NUM_COEFFS,
    DCT_TOLERANCE,
    DEFAULT_DCT_DOMAIN,
    _dct,
    _default_num_coeffs,
    _fitted_dct,
    _Recorder,
    _run_examples,
)
from fastact.convert.gmp import _Fold, _plain, _plan_fold
from fastact.convert.result import Change, Conversion
from fastact.convert.rewrite import install_forward, unique_attribute
from fastact.convert.survey import (
    _inplace_reason,
    _join,
    _not_relu_reason,
    _Owner,
    _Site,
    _site_channels,
    _survey,
)


def _short(module: nn.Module, limit: int = 60) -> str:
    """repr(module) cut after its first arguments when longer than `limit` (the summary's
    layer lines: which layer, not all its settings)."""
    text = repr(module)
    if len(text) <= limit or "\n" in text:
        return text if "\n" not in text else f"{type(module).__name__}(...)"
    cut = text.rfind(", ", 0, limit - 5)
    return text[:cut] + ", ...)" if cut > 0 else text


def _factory(model: nn.Module) -> dict:
    """device and dtype for new modules: those of the model's first floating parameter."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return {"device": tensor.device, "dtype": tensor.dtype}
    return {}


class _Converter:
    def __init__(self, model: nn.Module, relu, linear_relu, batches):
        self.model, self.relu, self.linear_relu, self.batches = model, relu, linear_relu, batches
        self.entries: list[tuple[tuple, list]] = []  # (sort key, [path, before, after, left])
        self.notes: list[str] = []
        self.folds: list[_Fold] = []
        self.added: list[str] = []
        self.recorders: dict[_Recorder, str] = {}  # recorder -> its path in the model
        self.fitted: dict[nn.Module, nn.Module] = {}  # recorder -> the DCT fitted in its place
        self.like = _factory(model)

    def entry(self, key: tuple, path: str, before: str, after, left: bool = False,
              order: int = 0) -> None:
        """A summary line; `order` places a fold's layer (-2) and BatchNorm (-1) before the
        ReLU (0) at the same site."""
        self.entries.append(((*key, order), [path, before, after, left]))

    def leave(self, site: _Site, reason: str) -> None:
        self.entry(site.key, site.label, site.text, reason, left=True)

    def run(self) -> Conversion:
        owners, sites = _survey(self.model)
        module_calls: dict[int, int] = {}
        for owner in owners:
            for module in owner.traced.modules.values():
                module_calls[id(module)] = module_calls.get(id(module), 0) + 1
        calls = {path: module_calls.get(id(module), 0)
                 for path, module in self.model.named_modules(remove_duplicate=False)}
        actions: dict[_Site, object] = {}  # site -> _Fold, "replace" or a reason to leave it
        for site in sites:
            if not site.relu:
                actions[site] = _not_relu_reason(site.name)
            elif site.owner is None:
                actions[site] = f"no traced forward calls {site.path}"
            else:
                fold = _plan_fold(site, calls) if self.linear_relu else None
                if isinstance(fold, _Fold):
                    actions[site] = fold
                elif self.relu is not None:
                    actions[site] = _inplace_reason(site) or "replace"
                else:
                    actions[site] = fold or "relu and linear_relu are None: nothing asked"
        self.by_path: dict[str, list[_Site]] = {}
        for site in sites:
            if site.target is not None:
                self.by_path.setdefault(site.path, []).append(site)
        self.resolve(sites, actions)
        for site in sites:
            action = actions[site]
            if isinstance(action, str) and action != "replace":
                self.leave(site, action)
        for fold in (a for a in actions.values() if isinstance(a, _Fold)):
            self.apply_fold(fold)
        self.replace(sites, actions)
        for owner in owners:
            if owner.rewrite:
                install_forward(owner.module, owner.traced.graph)
        self.transformer_fast_paths()
        self.fit()
        self.write_notes(owners, sites, actions)
        self.entries.sort(key=lambda item: item[0])
        changes = [Change(path, before, self.after_text(after), left)
                   for _, (path, before, after, left) in self.entries]
        found: dict[str, int] = {}
        for site in sites:
            found[site.name] = found.get(site.name, 0) + 1
        return Conversion(self.model, changes, self.notes, found, self.folds, self.added)

    def after_text(self, after) -> str:
        if isinstance(after, tuple):  # (prefix, module[, suffix]): the module as it ended up
            prefix, module, *suffix = after
            return prefix + repr(self.fitted.get(module, module)) + "".join(suffix)
        return after

    # -- deciding ------------------------------------------------------------------------------
    def resolve(self, sites: list[_Site], actions: dict) -> None:
        """Where an action needs the forward rewritten (a call in forward, or the calls of one
        module converted differently) and the owner's forward cannot be, the sites are left,
        with the reason. (Every call of a module replaced alike needs no rewrite.)"""
        def active(site: _Site) -> bool:
            return isinstance(actions[site], _Fold) or actions[site] == "replace"

        def why(site: _Site) -> str:
            return f"would need the forward rewritten, but {site.owner.traced.blocker}"

        for site in sites:
            if site.target is None and site.node is not None and active(site) \
                    and site.owner.traced.blocker:
                actions[site] = f"{site.name} in {type(site.owner.module).__name__}.forward " \
                    + why(site)
        for path, calls in self.by_path.items():
            blocked = [s for s in calls if s.node is not None and s.owner.traced.blocker]
            if len(calls) > 1 and blocked and not all(actions[s] == "replace" for s in calls):
                for site in filter(active, calls):
                    actions[site] = (f"{path} is called at {len(calls)} places and converting "
                                     f"them differently {why(blocked[0])}")

    # -- doing ---------------------------------------------------------------------------------
    def apply_fold(self, fold: _Fold) -> None:
        site = fold.site
        owner_module = site.owner.module
        _set_submodule(self.model, fold.layer_path, fold.geometric)
        key = site.key
        via = ""
        if fold.bn is not None:
            _set_submodule(self.model, fold.bn_path, nn.Identity())
            via = f" (with {fold.bn_path}'s eval statistics)"
        self.entry(key, fold.layer_path, _short(fold.layer), _short(fold.geometric) + via,
                   order=-2)
        if fold.bn is not None:
            self.entry(key, fold.bn_path, _short(fold.bn),
                       f"Identity() (folded into {fold.layer_path})", order=-1)
        if site.target is not None and site.calls == 1:
            _set_submodule(owner_module, site.target, nn.Identity())
            self.entry(key, site.label, site.text, f"Identity() (folded into {fold.layer_path})")
        else:
            self.remove_node(site)
            self.entry(key, site.label, site.text,
                       f"removed from the forward (folded into {fold.layer_path})")
        self.folds.append(fold)

    def remove_node(self, site: _Site) -> None:
        node = site.node
        node.replace_all_uses_with(node.args[0])
        site.owner.traced.graph.erase_node(node)
        site.owner.rewrite = True

    def new_module(self, sites: list[_Site]) -> nn.Module:
        import fastact.nn as fnn

        if self.relu == "hat":
            return fnn.Hat()
        layouts = {_site_channels(site) for site in sites}
        channels = layouts.pop() if len(layouts) == 1 else None
        if self.batches:
            return _Recorder(channels)
        return _dct(channels or (1, 1), _default_num_coeffs()[0], DEFAULT_DCT_DOMAIN, self.like)

    def place(self, module: nn.Module, path: str) -> None:
        self.added.append(path)
        if isinstance(module, _Recorder):
            self.recorders[module] = path

    def replace(self, sites: list[_Site], actions: dict) -> None:
        """Gives every site whose action is "replace" its new module: at the module's path where
        that serves every call of it (or one module has to serve them all: Hat, which has no
        state, or a forward that cannot be rewritten), else a new attribute per call."""
        groups: dict[str, list[_Site]] = {}
        for site in sites:
            if actions[site] != "replace":
                continue
            if site.target is None:
                self.retarget(site, self.new_module([site]))
            else:
                groups.setdefault(site.path, []).append(site)
        for path, group in groups.items():
            calls = self.by_path[path]
            owner = group[0].owner
            left = any(isinstance(actions[s], str) and actions[s] != "replace" for s in calls)
            shared = not left and len(group) == len(calls) and (
                self.relu == "hat" or len(group) == 1
                or any(s.node is None or s.owner.traced.blocker for s in group))
            if shared:
                module = self.new_module(group)
                _set_submodule(owner.module, group[0].target, module)
                self.place(module, path)
                for site in group:
                    suffix = f" (one module for its {site.calls} calls)" if site.calls > 1 else ""
                    self.entry(site.key, site.label, site.text, ("", module, suffix))
                continue
            for site in group:
                module = self.new_module([site])
                if site is group[0] and not left:  # the first call keeps the module's path
                    _set_submodule(owner.module, site.target, module)
                    self.place(module, path)
                    self.entry(site.key, site.label, site.text, ("", module))
                else:
                    self.retarget(site, module)

    def retarget(self, site: _Site, module: nn.Module) -> None:
        """The call at `site` now calls `module`, a new attribute of the owner."""
        owner = site.owner
        base = site.target.replace(".", "_") if site.target else \
            site.name.rpartition(".")[2].rstrip("_")
        name = unique_attribute(owner.module, base)
        owner.module.add_module(name, module)
        graph = owner.traced.graph
        with graph.inserting_after(site.node):
            call = graph.call_module(name, (site.node.args[0],))
        site.node.replace_all_uses_with(call)
        graph.erase_node(site.node)
        owner.position[call] = owner.position[site.node]
        owner.rewrite = True
        path = _join(owner.path, name)
        self.place(module, path)
        self.entry(site.key, site.label, site.text, (f"{path}: ", module))

    def fit(self) -> None:
        if not self.recorders:
            return
        _run_examples(self.model, self.batches)
        errors = []
        for recorder, path in self.recorders.items():
            like = dict(self.like)
            if recorder.device is not None:
                like.setdefault("device", recorder.device)
            module, error = _fitted_dct(recorder, like)
            _set_submodule(self.model, path, module)
            self.fitted[recorder] = module
            errors.append((error, path))
        reached = [e for e in errors if e[0] is not None]
        if reached:
            worst = max(reached)
            self.notes.append(
                f"relu='dct': each site's domain is the range of its example inputs, 5% wider on "
                f"each side, boundary='clamp' (beyond it the end value holds); coefficients: the "
                f"fewest of {DCT_NUM_COEFFS} within {DCT_TOLERANCE:.0%} of the site's input range "
                f"on {DCT_COVERAGE:.1%} of its example inputs (worst site {worst[1]}: "
                f"{worst[0]:.2%} of its range)")
        missed = [path for error, path in errors if error is None]
        if missed:
            self.notes.append(f"relu='dct': no example input reached {', '.join(missed)}: the "
                              f"default domain {DEFAULT_DCT_DOMAIN} there")

    def transformer_fast_paths(self) -> None:
        """nn.TransformerEncoderLayer computes relu / gelu and its linear layers itself on its
        inference fast path (and nn.TransformerEncoder feeds its layers nested tensors): off
        where convert changed its activation or linear1."""
        layers = [m for m in self.model.modules() if isinstance(m, nn.TransformerEncoderLayer)
                  and m.activation_relu_or_gelu and not (
                      _plain(m.linear1, nn.Linear)
                      and (m.activation in (F.relu, F.gelu)
                           or type(m.activation) in (nn.ReLU, nn.GELU)))]
        for layer in layers:
            layer.activation_relu_or_gelu = 0
        for module in self.model.modules():
            if isinstance(module, nn.TransformerEncoder) and any(
                    layer in layers for layer in module.layers):
                module.use_nested_tensor = False
        if layers:
            self.notes.append(f"{len(layers)} nn.TransformerEncoderLayer(s): inference fast path "
                              "off (it computes relu/gelu and its Linear layers itself), so that "
                              "the converted modules run")

    def write_notes(self, owners: list[_Owner], sites: list[_Site], actions: dict) -> None:
        if self.relu == "dct" and not self.batches and any(a == "replace"
                                                           for a in actions.values()):
            num_coeffs = _default_num_coeffs()[0]
            message = (f"fastact.convert(relu='dct') without example_inputs assumes every ReLU's "
                       f"input lies in {DEFAULT_DCT_DOMAIN} (unit-scale pre-activations, as after "
                       f"BatchNorm): the fit ({num_coeffs} coefficients) is within "
                       f"{_default_num_coeffs()[1]:.1%} of that range there and holds its end "
                       "value beyond it. Pass example_inputs=... to fit each site to the range "
                       "its inputs have")
            warnings.warn(message, stacklevel=4)
            self.notes.append(message)
        rewritten = [f"{o.path or '(model)'} ({type(o.module).__name__})" for o in owners
                     if o.rewrite]
        if rewritten:
            self.notes.append("forward rewritten from its torch.fx trace (class, attributes and "
                              "state_dict keys kept): " + ", ".join(rewritten))
        folded = [f.layer_path for f in self.folds if f.bn is not None]
        if folded:
            self.notes.append("BatchNorm folded into GmP with its running statistics (exact in "
                              "eval mode; these layers now train without BatchNorm): "
                              + ", ".join(folded))
        for owner in owners:  # torch.nn's own layers call no activation we do not see
            custom = not type(owner.module).__module__.startswith("torch.nn.")
            if owner.traced.graph is None and custom:
                self.notes.append(
                    f"{owner.path or '(model)'} ({type(owner.module).__name__}) did not trace "
                    f"with torch.fx ({owner.traced.error}): only its activation submodules and "
                    "attributes are seen, not F.relu calls in its forward nor what feeds them")


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)
