"""What a user of the flow sees, checked on flows whose every layer acts: the partitions for
three modalities against a table written by hand, couplings that alternate, samples at the
asked temperature, and completions that maximise the joint density (including the log-det)."""

from __future__ import annotations

import pytest
import torch

from mango.flows import AffineCoupling, partition_indices
from mango.flows.impute import complete
from mango.testing.flows import acting_flow, idle_layers

#: positions of X1 for tokens (4, 4, 4): a = 0..3, b = 4..7, c = 8..11, written from the rule
#: "modality m keeps its tokens of parity p (m even) or q (m odd) in X1", (p, q) = bits of v - 1
IMCA_THREE = {
    1: [0, 2, 4, 6, 8, 10],  # a even, b even, c even
    2: [0, 2, 5, 7, 8, 10],  # a even, b odd,  c even
    3: [1, 3, 4, 6, 9, 11],  # a odd,  b even, c odd
    4: [1, 3, 5, 7, 9, 11],  # a odd,  b odd,  c odd
}
#: MMCA variant v transforms modality v mod 3 and conditions on the two others
MMCA_THREE_X2 = {1: [4, 5, 6, 7], 2: [8, 9, 10, 11], 3: [0, 1, 2, 3]}


@pytest.mark.parametrize("variant", [1, 2, 3, 4])
def test_imca_for_three_modalities_matches_the_table(variant: int) -> None:
    idx1, idx2 = partition_indices((4, 4, 4), "imca", variant)
    assert idx1.tolist() == IMCA_THREE[variant]
    assert sorted(idx1.tolist() + idx2.tolist()) == list(range(12))


@pytest.mark.parametrize("variant", [1, 2, 3])
def test_mmca_for_three_modalities_matches_the_table(variant: int) -> None:
    assert partition_indices((4, 4, 4), "mmca", variant)[1].tolist() == MMCA_THREE_X2[variant]


def test_every_layer_of_the_test_flow_acts() -> None:
    flow = acting_flow(blocks=4)
    assert idle_layers(flow, torch.randn(4, 8, 4, dtype=torch.float64)) == []


def test_couplings_alternate_and_together_transform_every_channel() -> None:
    flow = acting_flow(blocks=4)
    couplings = [m for m in flow.modules() if isinstance(m, AffineCoupling)]
    assert [c.swap for c in couplings] == [False, True, False, True]
    x = torch.randn(4, 8, 4, dtype=torch.float64)
    changed = torch.zeros(4, dtype=torch.bool)
    for coupling in couplings:
        changed |= (coupling(x)[0] - x).abs().amax((0, 1)) > 0
    assert changed.all(), changed


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.5])
def test_samples_have_the_asked_temperature(temperature: float) -> None:
    flow = acting_flow()
    torch.manual_seed(1)
    x = flow.sample(4000, temperature=temperature)
    z, _ = flow(x)
    assert abs(z.std().item() - temperature) < 0.02 * temperature
    torch.manual_seed(1)
    z0 = torch.randn(4000, 8, 4, dtype=torch.float64)
    assert torch.allclose(flow.inverse(temperature * z0)[0], x)


class Gaussian(torch.nn.Module):
    """A joint Gaussian N(mu, Sigma) over (L, D) = (2, 1) tokens, with ``log_prob``."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
        self.cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        normal = torch.distributions.MultivariateNormal(self.mu, self.cov)
        return normal.log_prob(x[:, :, 0])


def test_completion_recovers_a_known_conditional_mean() -> None:
    joint = Gaussian()
    x = torch.tensor([[[0.0], [5.0]], [[3.0], [7.0]]], dtype=torch.float64)  # token 1 is unknown
    missing = torch.tensor([[False, True], [False, True]])
    result = complete(joint, x, missing, steps=600, lr=0.05)
    # E[x1 | x0] = mu1 + s10 / s00 (x0 - mu0)
    expected = joint.mu[1] + joint.cov[1, 0] / joint.cov[0, 0] * (x[:, 0, 0] - joint.mu[0])
    assert torch.allclose(result.tokens[:, 1, 0], expected, atol=1e-3), result.tokens
    assert torch.equal(result.tokens[:, 0], x[:, 0])  # the observed token is untouched


def test_completion_maximises_the_joint_density_with_its_log_det() -> None:
    """One unknown scalar: the completion is the best point of a fine grid of ``log_prob`` (the
    latent density plus the log-det); the latent density alone peaks elsewhere. A coupling-only
    flow (ActNorm + affine coupling, perturbed) keeps the latent term flat enough for the
    log-det to move the optimum."""
    flow = acting_flow(2, (2, 2), blocks=1, partitions=[])
    x = torch.randn(1, 4, 2, dtype=torch.float64)
    missing = torch.zeros(1, 4, 2, dtype=torch.bool)
    missing[0, 3, 0] = True
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    candidates = x.repeat(len(grid), 1, 1)
    candidates[:, 3, 0] = grid
    with torch.no_grad():
        z, logdet = flow(candidates)
        joint = flow.latent_log_prob(z, logdet)
        latent_only = flow.latent_log_prob(z, torch.zeros_like(logdet))
    best, best_latent = grid[joint.argmax()], grid[latent_only.argmax()]
    assert abs(best - best_latent) > 0.05  # the log-det moves the optimum: the test can tell
    result = complete(flow, x, missing, steps=800, lr=0.02, start=torch.zeros_like(x))
    assert abs(result.tokens[0, 3, 0] - best) < 2e-3, (result.tokens[0, 3, 0], best)
    with torch.no_grad():
        assert torch.allclose(result.log_prob, flow.log_prob(result.tokens))


def _tokens_reached(partitions: list[str], tokens: tuple[int, ...]) -> list[int]:
    """Positions whose output depends on some other token's input (float64 Jacobian)."""
    flow = acting_flow(3, tokens, 2, partitions=partitions, coupling_hidden=8)
    x = torch.randn(sum(tokens), 3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x)
    cross = jac.abs().sum((1, 3))
    cross.fill_diagonal_(0)
    return (cross.sum(1) == 0).nonzero().flatten().tolist()


@pytest.mark.parametrize(
    "partitions,tokens,unreached",
    [
        (["mmca", "imca"], (6, 6), [10, 11]),  # the last modality's last two tokens
        (["mmca", "imca"], (4, 4, 4), [10, 11]),
        (["mmca"], (6, 6), [4, 5, 10, 11]),
        (["imca"], (6, 6), [8, 9, 10, 11]),
        (["mmca", "imca", "lica"], (6, 6), []),  # the default: LICA's mixing reaches them
    ],
)
def test_which_tokens_the_signed_attention_never_reaches(partitions, tokens, unreached) -> None:
    """docs/flows.md: rows ``L2-2`` and ``L2-1`` of the signed ``N`` are zero, so without LICA
    the last modality's last two tokens take no information from any other token."""
    assert _tokens_reached(partitions, tokens) == unreached
