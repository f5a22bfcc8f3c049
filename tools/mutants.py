"""``make mutants``: plant each curated bug in the math, run the tests mapped to it, report.

A mutant is a one-line change written from the equations (docs/flows.md, docs/missing.md): a
dropped factor, a flipped sign or mask, swapped halves, a wrong partition rule, merge index or
temperature, an imputation objective or mask error, a wrong backprop cotangent. Each names the
tests that should notice it. A mutant is **killed** when those tests fail, **survived** when
they pass: then either a test is missing or the change is not a bug (say so and drop it).

The working tree is never changed: ``src`` and ``tests`` are copied once into a temporary
directory, each mutant is applied to the copy (and reverted after), and the tests run there
with the copy's ``src`` first on ``PYTHONPATH``. ``tests/test_mutants.py`` checks that every
mutant still applies to the current code (its text occurs exactly once and the result parses),
so the list cannot silently rot.

Run: ``python tools/mutants.py [--only NAME ...] [--out mutants.json]`` (``make mutants``); a
tool of the source checkout, not part of the installed package or of ``make test``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOW_LAYERS = "tests/flows/test_layers.py"
ACTNORM = FLOW_LAYERS + "::test_actnorm"
COUPLING = FLOW_LAYERS + "::test_coupling"
TOKEN_MIXING = FLOW_LAYERS + "::test_token_mixing"
KERNELS = "tests/flows/test_kernels.py"
SIGNED = "tests/flows/test_signed.py"
FORMS = "tests/flows/test_attention_forms.py"
ICA = "tests/flows/test_ica.py"
FLOW = "tests/flows/test_flow.py"
USERS = "tests/flows/test_what_users_see.py"
BACKPROP = "tests/flows/test_backprop.py"
IMPUTE = "tests/flows/test_impute.py"
FLOW_IMPUTE = "tests/models/fusion/test_flow_impute.py"
MISSING = "tests/train/test_missing.py"
MASKS = "src/mango/models/missing.py"  # its doctests
DROPOUT = "tests/train/test_modality_dropout.py"


@dataclass(frozen=True)
class Mutant:
    """Replace ``old`` by ``new`` in ``src/mango/<path>``; ``tests`` should then fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    bug: str  # what a user would see

    def apply(self, source: str) -> str:
        """``source`` with the mutation; ``ValueError`` unless ``old`` occurs exactly once."""
        count = source.count(self.old)
        if count != 1:
            raise ValueError(f"{self.name}: {self.old!r} occurs {count} times in {self.path}")
        return source.replace(self.old, self.new)


MUTANTS: tuple[Mutant, ...] = (
    # ActNorm: y = x e^s + b, log|det J| = L Σ s
    Mutant(
        "actnorm-logdet-sign",
        "flows/actnorm.py",
        "logdet = (x.shape[1] * log_scale.sum())",
        "logdet = (-x.shape[1] * log_scale.sum())",
        (ACTNORM,),
        "wrong likelihood of every flow",
    ),
    Mutant(
        "actnorm-logdet-drops-L",
        "flows/actnorm.py",
        "logdet = (x.shape[1] * log_scale.sum())",
        "logdet = (log_scale.sum())",
        (ACTNORM,),
        "log-det short by a factor of the token count",
    ),
    Mutant(
        "actnorm-inverse-bias-sign",
        "flows/actnorm.py",
        "x = (y - self.bias.to(y.dtype))",
        "x = (y + self.bias.to(y.dtype))",
        (ACTNORM,),
        "the inverse and sampling are wrong",
    ),
    Mutant(
        "actnorm-init-uncentred-std",
        "flows/actnorm.py",
        "std = self._rank_average((flat - mean).pow(2).mean(0)).sqrt()",
        "std = self._rank_average(flat.pow(2).mean(0)).sqrt()",
        (FLOW,),
        "data init does not give unit variance",
    ),
    # Affine coupling: y_b = x_b e^s + t, log|det J| = Σ s
    Mutant(
        "coupling-logdet-sign",
        "flows/coupling.py",
        "return self._merge(x_a, y_b), scale.flatten(1).sum(1)",
        "return self._merge(x_a, y_b), -scale.flatten(1).sum(1)",
        (COUPLING,),
        "wrong likelihood",
    ),
    Mutant(
        "coupling-inverse-order",
        "flows/coupling.py",
        "x_b = (y_b - shift) * (-scale).exp()",
        "x_b = y_b * (-scale).exp() - shift",
        (COUPLING,),
        "the inverse is not the inverse",
    ),
    Mutant(
        "coupling-merge-ignores-swap",
        "flows/coupling.py",
        "return torch.cat([x_b, x_a] if self.swap else [x_a, x_b], dim=-1)",
        "return torch.cat([x_a, x_b], dim=-1)",
        (COUPLING,),
        "swapped couplings put the halves back in the wrong place",
    ),
    Mutant(
        "block-couplings-never-alternate",
        "flows/block.py",
        "swap=bool(b % 2),",
        "swap=False,",
        (USERS,),
        "half of the channels are never coupled",
    ),
    # Signed ICA: N = ½(P+ − P−) strictly upper, A = I + βN, log|det| = 0
    Mutant(
        "signed-drops-half",
        "flows/signed_attention.py",
        "torch.cat([0.5 * (positive - negative), last_row], 1)",
        "torch.cat([(positive - negative), last_row], 1)",
        (KERNELS, SIGNED),
        "‖N‖ may reach 2: the inverse's bound 1/(1-β) is lost",
    ),
    Mutant(
        "signed-plus-instead-of-minus",
        "flows/signed_attention.py",
        "torch.cat([0.5 * (positive - negative), last_row], 1)",
        "torch.cat([0.5 * (positive + negative), last_row], 1)",
        (KERNELS, SIGNED),
        "rows sum to 1: the layer rescales tokens",
    ),
    Mutant(
        "signed-mask-keeps-diagonal",
        "flows/signed_attention.py",
        "on_or_below = torch.tril(torch.ones(self.l2 - 1, self.l2, dtype=torch.bool))",
        "on_or_below = torch.tril(torch.ones(self.l2 - 1, self.l2, dtype=torch.bool), -1)",
        (KERNELS, SIGNED),
        "a token attends to itself: the diagonal and log-det are no longer exact",
    ),
    Mutant(
        "signed-temperature-multiplies",
        "flows/signed_attention.py",
        "s = (q @ k.transpose(1, 2))[:, :-1] / self.temperature.to(x1.dtype)",
        "s = (q @ k.transpose(1, 2))[:, :-1] * self.temperature.to(x1.dtype)",
        (KERNELS,),
        "wrong attention sharpness",
    ),
    Mutant(
        "signed-dense-inverse-lower",
        "flows/signed_attention.py",
        "x2 = torch.linalg.solve_triangular(a, y2, upper=True, unitriangular=True)",
        "x2 = torch.linalg.solve_triangular(a, y2, upper=False, unitriangular=True)",
        (KERNELS, FORMS),
        "the dense inverse is not the inverse",
    ),
    Mutant(
        "signed-causal-drops-half",
        "flows/kernels/signed.py",
        "coefficient = 0.5 * beta + 0.0 * q.sum((1, 2), keepdim=True)",
        "coefficient = beta + 0.0 * q.sum((1, 2), keepdim=True)",
        (KERNELS,),
        "the long-sequence kernel applies 2βN",
    ),
    Mutant(
        "signed-solve-drops-half",
        "flows/kernels/solve.py",
        "n = p[0].sub_(p[1]).mul_(0.5 * beta)",
        "n = p[0].sub_(p[1]).mul_(beta)",
        (KERNELS,),
        "the blockwise inverse solves with 2βN",
    ),
    Mutant(
        "signed-backward-grad-x2-untransposed",
        "flows/kernels/signed.py",
        "grad_x2 = torch.bmm(n2.mT, grad_m)",
        "grad_x2 = torch.bmm(n2, grad_m)",
        (KERNELS, SIGNED),
        "wrong gradient to the transformed tokens (cotangent N instead of Nᵀ)",
    ),
    Mutant(
        "signed-backward-strength-drops-tanh-derivative",
        "flows/kernels/signed.py",
        "grad_strength = (grad * m).sum() * (0.5 * bound) * (1 - tanh_b.square())",
        "grad_strength = (grad * m).sum() * (0.5 * bound)",
        (KERNELS, SIGNED),
        "wrong gradient of the strength",
    ),
    Mutant(
        "signed-backward-temperature-sign",
        "flows/kernels/signed.py",
        "grad_offset = -grad_inv_tau * inv_tau.square()",
        "grad_offset = grad_inv_tau * inv_tau.square()",
        (KERNELS, SIGNED),
        "the temperature trains the wrong way",
    ),
    Mutant(
        "signed-backward-actnorm-scale",
        "flows/kernels/signed.py",
        "grad_log_scale = (grad_x * x).sum((0, 1))",
        "grad_log_scale = (grad_xa * x).sum((0, 1))",
        (SIGNED,),
        "the folded ActNorm's scale gets a wrong gradient",
    ),
    # Softmax / gated ICA: A = c0 I + c1 P, log A_ii = log(c0 + c1 P_ii)
    Mutant(
        "gated-logdiag-drops-c0",
        "flows/softmax_attention.py",
        "log_diag = torch.logaddexp(log_c0, log_c1 + log_p.diagonal(dim1=-2, dim2=-1))",
        "log_diag = log_c1 + log_p.diagonal(dim1=-2, dim2=-1)",
        (FLOW_LAYERS, FORMS),
        "the gated form's log-det forgets the identity part",
    ),
    Mutant(
        "gated-coefficients-do-not-sum-to-one",
        "flows/softmax_attention.py",
        "return F.logsigmoid(-self.gate), F.logsigmoid(self.gate)",
        "return F.logsigmoid(self.gate), F.logsigmoid(self.gate)",
        (FORMS, KERNELS),
        "the gated form is not a convex mix of I and P",
    ),
    Mutant(
        "causal-mask-transposed",
        "flows/cross_attention.py",
        "torch.tril(torch.ones(self.l2, self.l2, dtype=torch.bool), -1)",
        "torch.triu(torch.ones(self.l2, self.l2, dtype=torch.bool), 1)",
        (FLOW_LAYERS, KERNELS),
        "A is lower-triangular: the triangular inverse is wrong",
    ),
    # The ICA layer around both forms
    Mutant(
        "ica-logdet-drops-channels",
        "flows/cross_attention.py",
        "return y, x.shape[2] * log_diag.sum(-1)",
        "return y, log_diag.sum(-1)",
        (FLOW_LAYERS,),
        "the official layer's log-det bug: short by a factor of D",
    ),
    Mutant(
        "ica-inverse-logdet-sign",
        "flows/cross_attention.py",
        "return x, -y.shape[2] * log_diag.sum(-1)",
        "return x, y.shape[2] * log_diag.sum(-1)",
        (FLOW_LAYERS,),
        "the inverse's log-det has the forward's sign",
    ),
    Mutant(
        "ica-merge-swaps-indices",
        "flows/cross_attention.py",
        "return y.index_copy_(1, idx1, y1).index_copy_(1, idx2, y2)",
        "return y.index_copy_(1, idx2, y1).index_copy_(1, idx1, y2)",
        (FLOW_LAYERS,),
        "tokens come back in the wrong places",
    ),
    Mutant(
        "ica-interpolation-misaligned",
        "flows/cross_attention.py",
        'x1.transpose(1, 2), size=self.l2, mode="linear", align_corners=True',
        'x1.transpose(1, 2), size=self.l2, mode="linear", align_corners=False',
        (KERNELS,),
        "the dense form and the fused kernel condition differently when L1 ≠ L2",
    ),
    # Partitions
    Mutant(
        "mmca-wrong-target",
        "flows/partitions.py",
        "target = variant % len(tokens)",
        "target = (variant - 1) % len(tokens)",
        (ICA, USERS),
        "MMCA v1 transforms the first modality, not the second",
    ),
    Mutant(
        "imca-rule-wrong-for-three-modalities",
        "flows/partitions.py",
        "x1_parity = high if m % 2 == 0 else low",
        "x1_parity = high if m == 0 else low",
        (USERS,),
        "wrong partition with three inputs",
    ),
    Mutant(
        "imca-bits-swapped",
        "flows/partitions.py",
        "high, low = (variant - 1) >> 1, (variant - 1) & 1",
        "low, high = (variant - 1) >> 1, (variant - 1) & 1",
        (ICA, USERS),
        "IMCA v2 and v3 exchanged against the paper's table",
    ),
    Mutant(
        "lica-half-off-by-one",
        "flows/partitions.py",
        "in_x2 = torch.arange(total) >= total // 2",
        "in_x2 = torch.arange(total) > total // 2",
        (ICA,),
        "LICA's X1 is one token longer than half",
    ),
    # LU token mixing: W = P L (U + diag s), log|det| = D Σ log|s|
    Mutant(
        "lu-logdet-drops-channels",
        "flows/token_mixing.py",
        "return (sign * x.shape[2] * self.log_s.to(x.dtype).sum())",
        "return (sign * self.log_s.to(x.dtype).sum())",
        (TOKEN_MIXING,),
        "LICA's log-det short by a factor of D",
    ),
    Mutant(
        "lu-unmix-wrong-permutation",
        "flows/token_mixing.py",
        "z = y.index_select(1, self.permutation).transpose(0, 1)",
        "z = y.index_select(1, self._inverse_permutation()).transpose(0, 1)",
        (TOKEN_MIXING,),
        "the token mixing's inverse permutes the wrong way",
    ),
    # The flow's density and sampling
    Mutant(
        "sample-temperature-squared",
        "flows/block.py",
        "z = temperature * torch.randn(",
        "z = temperature**2 * torch.randn(",
        (USERS,),
        "wrong samples at T ≠ 1",
    ),
    Mutant(
        "log-prob-normaliser",
        "flows/block.py",
        "log_normal = -0.5 * (z.pow(2) + math.log(2 * math.pi))",
        "log_normal = -0.5 * (z.pow(2) + math.log(math.pi))",
        (FLOW,),
        "log-likelihoods off by a constant per dimension",
    ),
    Mutant(
        "bits-per-dim-in-nats",
        "flows/block.py",
        "return -log_prob / (self.length * self.dim * math.log(2))",
        "return -log_prob / (self.length * self.dim)",
        (FLOW,),
        "bits/dim reported in nats",
    ),
    # Memory-saving backprop
    Mutant(
        "backprop-drops-logdet-cotangent",
        "flows/backprop.py",
        "(y_again, logdet), [x, *own], (grad_y, grad_logdet), allow_unused=True",
        "(y_again, logdet), [x, *own], (grad_y, 0 * grad_logdet), allow_unused=True",
        (BACKPROP,),
        "memory saving trains without the log-det's gradient",
    ),
    Mutant(
        "split-backprop-density-cotangent",
        "flows/backprop.py",
        "task, density, y = task_in, result[0] - task_in, x.detach()",
        "task, density, y = task_in, result[0], x.detach()",
        (BACKPROP,),
        "the detached NLL's gradient counts the task's twice",
    ),
    # Imputation: argmax over x_m of log p(x_o, x_m), observed entries fixed
    Mutant(
        "impute-mask-inverted",
        "flows/impute.py",
        "return flow.log_prob(torch.where(missing, values, observed))",
        "return flow.log_prob(torch.where(missing, observed, values))",
        (IMPUTE, USERS),
        "the search moves the observed tokens",
    ),
    Mutant(
        "impute-descends",
        "flows/impute.py",
        "values.grad = -gradient  # ascent on log p",
        "values.grad = gradient",
        (IMPUTE, USERS),
        "the completion makes the density worse",
    ),
    Mutant(
        "impute-keeps-the-worst",
        "flows/impute.py",
        "better = current.detach() > best_log_prob",
        "better = current.detach() < best_log_prob",
        (IMPUTE, USERS),
        "the least likely iterate is returned",
    ),
    Mutant(
        "impute-objective-drops-logdet",
        "flows/impute.py",
        "return flow.log_prob(torch.where(missing, values, observed))",
        "return (lambda f: f.latent_log_prob(f(torch.where(missing, values, observed))[0], 0))(flow)",
        (USERS,),
        "a different, wrong objective (the latent density only)",
    ),
    Mutant(
        "fusion-imputes-the-present-modality",
        "models/fusion/flow.py",
        "absent = (~present[rows]).repeat_interleave(",
        "absent = (present[rows]).repeat_interleave(",
        (FLOW_IMPUTE,),
        "--fill impute completes the present modality and keeps the zeros",
    ),
    Mutant(
        "fusion-imputes-complete-samples",
        "models/fusion/flow.py",
        "rows = (~present).any(1).nonzero().squeeze(1)",
        "rows = present.any(1).nonzero().squeeze(1)",
        (FLOW_IMPUTE,),
        "complete samples are imputed, incomplete ones are not",
    ),
    Mutant(
        "fusion-impute-starts-at-zero-not-the-mode",
        "models/fusion/flow.py",
        "start = self.flow.inverse(mode)[0]",
        "start = mode",
        (FLOW_IMPUTE,),
        "the 'prior' start is the zero token, not the flow's mode f⁻¹(0)",
    ),
    # Missing-modality masks
    Mutant(
        "zero-fill-zeroes-the-present",
        "models/missing.py",
        "return x * present.to(x.dtype).reshape(",
        "return x * (~present).to(x.dtype).reshape(",
        (MASKS,),
        "the present modality is zeroed and the absent one kept",
    ),
    Mutant(
        "missing-table-overlaps",
        "train/missing.py",
        "table[np.asarray(order)[j::k][:per], j] = True",
        "table[np.asarray(order)[:per], j] = True",
        (MISSING + "::test_tables_split_the_rate_evenly_and_disjointly",),
        "the same samples lose every listed modality",
    ),
    Mutant(
        "missing-dataset-or",
        "train/missing.py",
        "bool(present[m]) and m not in absent",
        "bool(present[m]) or m not in absent",
        (MISSING + "::test_missing_dataset_and_dropout_are_deterministic",),
        "a modality dropped by the table is still present",
    ),
    Mutant(
        "dropout-probability-inverted",
        "train/missing.py",
        "if float(draw[0]) < self.p:",
        "if float(draw[0]) > self.p:",
        (DROPOUT,),
        "data.modality_dropout: 0.1 drops 90 % of the samples",
    ),
)


@dataclass
class Outcome:
    """One mutant's run: ``killed`` when its tests failed."""

    name: str
    killed: bool
    seconds: float
    tests: tuple[str, ...]
    bug: str
    tail: str = ""


def copy_tree(destination: Path) -> None:
    """``src``, ``tests`` and the files the tests read, without caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    for name in ("src", "tests", "configs", "docs"):
        shutil.copytree(ROOT / name, destination / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "Makefile"):
        shutil.copy2(ROOT / name, destination / name)


def _pytest(copy: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """pytest in ``copy`` with its ``src`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::UserWarning",
    ]
    return subprocess.run([*command, *args], cwd=copy, env=env, capture_output=True, text=True)


def run_mutant(mutant: Mutant, copy: Path) -> Outcome:
    """Apply ``mutant`` to ``copy``, run its tests there, revert."""
    target = copy / "src" / "mango" / mutant.path
    original = target.read_text()
    target.write_text(mutant.apply(original))
    began = time.perf_counter()
    try:
        result = _pytest(copy, ["-x", *mutant.tests])
    finally:
        target.write_text(original)
    seconds = time.perf_counter() - began
    lines = (result.stdout + result.stderr).strip().splitlines()
    tail = lines[-1] if lines else ""
    # exit 1: tests failed; 2-4: collection, usage or internal errors also kill (the code broke)
    return Outcome(mutant.name, result.returncode != 0, seconds, mutant.tests, mutant.bug, tail)


def check_clean(copy: Path) -> str:
    """The mapped tests pass on the unmutated copy (otherwise every mutant looks killed)."""
    result = _pytest(copy, sorted({t for m in MUTANTS for t in m.tests}))
    last = (result.stdout + result.stderr).strip().splitlines()[-1]
    if result.returncode != 0:
        raise SystemExit(f"mango mutants: the mapped tests fail without any mutant: {last}")
    return last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="run only these mutants (by name)")
    parser.add_argument("--out", type=Path, help="write the outcomes as JSON here")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.name in args.only]
    unknown = set(args.only or ()) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"--only: unknown mutant {sorted(unknown)[0]!r}")
    began = time.perf_counter()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="mango-mutants-") as tmp:
        copy = Path(tmp)
        copy_tree(copy)
        print(f"clean run of the mapped tests: {check_clean(copy)}", flush=True)
        for i, mutant in enumerate(chosen, 1):
            outcome = run_mutant(mutant, copy)
            outcomes.append(outcome)
            verdict = "killed" if outcome.killed else "SURVIVED"
            print(f"[{i:2d}/{len(chosen)}] {verdict:8s} {mutant.name} ({outcome.seconds:.0f} s)")
            if not outcome.killed:
                print(f"          {mutant.bug}; tests: {' '.join(mutant.tests)}", flush=True)
    survivors = [o.name for o in outcomes if not o.killed]
    total = time.perf_counter() - began
    print(
        f"{len(outcomes) - len(survivors)}/{len(outcomes)} killed in {total / 60:.1f} min"
        + (f"; survived: {', '.join(survivors)}" if survivors else "")
    )
    if args.out:
        summary = {"seconds": total, "outcomes": [asdict(o) for o in outcomes]}
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if survivors else 0


def parses(mutant: Mutant) -> bool:
    """Whether the mutated file is still valid Python (used by ``tests/test_mutants.py``)."""
    source = (ROOT / "src" / "mango" / mutant.path).read_text()
    ast.parse(mutant.apply(source))
    return True


if __name__ == "__main__":
    sys.exit(main())
