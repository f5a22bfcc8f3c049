"""Flow health over an evaluation: every flow's attention effect and round trip, batch by batch.

:class:`FlowHealthMonitor` hooks every :class:`~mango.flows.MangoFlow` of a model; each time a
flow runs forward (in evaluation, on real tokens), :func:`~mango.flows.health_terms` adds that
batch's terms (not inside ``with flow.health_paused():``, as during the search passes of an
imputation, :meth:`~mango.models.fusion.FlowFusion.impute`). ``summary()`` gives the keys of ``mango eval``'s JSON: ``attention_effect`` (mean
over flows of the mean over their ICA layers of ``‖Y2 - X2‖ / ‖X2‖``; ``None`` when no flow has an
ICA layer), ``round_trip_error`` (the
worst flow's ``‖f⁻¹(f(x)) - x‖ / ‖x‖``) and ``flow_health`` (per flow, with per-layer effects).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mango.flows import HealthTerms, MangoFlow, health_terms


class FlowHealthMonitor:
    """Context manager: ``with FlowHealthMonitor(model) as health: ...; health.summary()``."""

    def __init__(self, model: nn.Module) -> None:
        self.flows = {
            name or "flow": m for name, m in model.named_modules() if isinstance(m, MangoFlow)
        }
        self.terms: dict[str, HealthTerms] = {}
        self._handles: list[Any] = []

    def __bool__(self) -> bool:
        return bool(self.flows)

    def _hook(self, name: str):
        def record(flow: MangoFlow, args: tuple[Any, ...], output: Any) -> None:
            if not flow.health_monitored:  # the search passes of an imputation
                return
            terms = health_terms(flow, args[0].detach())
            self.terms[name] = self.terms[name] + terms if name in self.terms else terms

        return record

    def __enter__(self) -> FlowHealthMonitor:
        self.terms = {}
        self._handles = [
            flow.register_forward_hook(self._hook(name)) for name, flow in self.flows.items()
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def summary(self) -> dict[str, Any]:
        """The health keys (empty when no flow ran)."""
        if not self.terms:
            return {}
        per_flow = {
            name: {
                "attention_effect": terms.attention_effect(),
                "round_trip_error": terms.round_trip_error(),
                "layer_effects": terms.layer_effects(),
            }
            for name, terms in self.terms.items()
        }
        effects = [f["attention_effect"] for f in per_flow.values()]
        effects = [e for e in effects if e is not None]  # coupling-only flows have no ICA layer
        return {
            "attention_effect": sum(effects) / len(effects) if effects else None,
            "round_trip_error": max(f["round_trip_error"] for f in per_flow.values()),
            "flow_health": per_flow,
        }
